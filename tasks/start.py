"""How a command takes a run: every check first, then the request files (beside the
ledger, never in it), then, under the run's lease, the run recorded and taken over.

A command that fails before `taken` (no key, a bad output, a budget refusal, a busy
lease, a bad input) leaves the ledger as it was: a finished run keeps its output path,
a run keeps naming the file its last successful command gave. Only the command that
holds the lease changes what the run will write.

A run's identity is its input's content, the job and the server that answers
(`tasks.stages.prepare.identify`): the same table against another server is another run.
"""

from __future__ import annotations

import getpass
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tasks.infra.ledger import Attempt, Ledger, this_holder
from tasks.infra.logs import LOGGER
from tasks.infra.run_layout import RunPaths
from tasks.infra.table_io import TableSource
from tasks.infra.work_copies import url_for
from tasks.lifecycle import Step
from tasks.money.catalog import check_batch_model
from tasks.money.estimate import Estimate, check_budget, estimate_plan
from tasks.runner import RunHandle, check_output_path
from tasks.spec.endpoints import server_url
from tasks.spec.job import JobSpec
from tasks.stages.prepare import RunIdentity, identify, prepare_run


@dataclass(frozen=True)
class Checked:
    """A command's input and job after every check that needs no service and no lease."""

    source: TableSource
    job: JobSpec  # its server pinned (collectors elsewhere talk to the same one) and named
    identity: RunIdentity

    @property
    def run_key(self) -> str:
        return self.identity.run_key


def pinned(job: JobSpec, source: TableSource) -> JobSpec:
    """The job as its run records it: the server that answers resolved now (an environment
    variable read later, by another process, could name another), and a name from the input
    file when the job has none."""
    update: dict[str, object] = {"base_url": server_url(job.provider, job.base_url)}
    if "name" not in job.model_fields_set:
        update["name"] = _name_from(source.path)
    return job.model_copy(update=update)


def check(
    source: TableSource,
    job: JobSpec,
    output: Path | None,
    overwrite: bool = False,
    input_sha: str | None = None,
) -> Checked:
    """Everything that can refuse a command before it writes or sends anything: the input
    readable, the output writable and not clobbered, the model's batch support."""
    if output is not None:
        check_output_path(output, overwrite)
    job = pinned(job, source)
    source = source.with_sheet(job.sheet)  # an Excel input's sheet is the job's to name
    if job.mode == "batch":  # sync does not touch the batch endpoint; auto avoids it (prepare)
        warning = check_batch_model(job.model, job.catalog_path, job.provider)
        if warning:
            LOGGER.warning(warning)
    return Checked(source, job, identify(source, job, input_sha))


def prepare(ledger: Ledger, checked: Checked, runs_root: Path) -> RunHandle:
    """Write the run's request files (or reuse them) and apply the budget while nothing of
    the run has been sent; reads the ledger, writes nothing in it."""
    paths = RunPaths(runs_root / checked.run_key)
    paths.pull()  # prepared by another worker: its files, not a second rendering
    plan = prepare_run(checked.source, checked.job, runs_root, checked.identity.input_sha)
    if not any(Step(row.step).sent for row in ledger.batches(checked.run_key)):
        check_budget(estimate_plan(plan, checked.job), checked.job)
    # Before the ledger names the run, so any worker can take it; only what the store lacks (a
    # journal another worker has since added to is theirs, not this stale copy's).
    paths.publish(paths.run_dir, replace=False)
    return RunHandle(checked.run_key, paths.run_dir, plan, checked.source.recorded_as)


def attempt_of(handle: RunHandle, output: Path, overwrite: bool = False, origin: str = "cli") -> Attempt:
    """What this command asks: its input as given, its output, its door, and who asked."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no user name in a bare container
        user = "?"
    return Attempt(handle.input_path, url_for(output), overwrite, origin, f"{user}@{this_holder()}")


@contextmanager
def taken(ledger: Ledger, handle: RunHandle, attempt: Attempt, wait_s: float = 0.0) -> Iterator[RunHandle]:
    """Hold the run's lease for the block, the run recorded (first time) and taken over by
    this attempt, its first round planned. RunBusyError (nothing changed) when another
    driver holds it after `wait_s`."""
    job = handle.job
    ledger.ensure_run(handle.run_key, url_for(handle.run_dir), job.name, job.provider, attempt)
    with ledger.lease(handle.run_key, wait_s=wait_s):
        ledger.take_over(handle.run_key, attempt)
        ledger.plan_batches(handle.run_key, 1, [(s.shard_no, s.path, s.lines) for s in handle.plan.shards])
        yield handle


def start_run(
    source: TableSource,
    job: JobSpec,
    runs_root: Path,
    ledger: Ledger,
    output: Path,
    overwrite: bool = False,
    origin: str = "cli",
    input_sha: str | None = None,
) -> RunHandle:
    """check, prepare and take the run over (the lease released after): for callers that
    drive a run without a flow (tests, benchmarks, notebooks)."""
    checked = check(source, job, output, overwrite, input_sha)
    handle = prepare(ledger, checked, runs_root)
    with taken(ledger, handle, attempt_of(handle, output, overwrite, origin)):
        return handle


def dry_run(source: TableSource, job: JobSpec, runs_root: Path) -> Estimate:
    """Prepare the run's request files (a later real run reuses them) and estimate it;
    nothing is uploaded and the ledger is not touched."""
    checked = check(source, job, None)
    plan = prepare_run(checked.source, checked.job, runs_root, checked.identity.input_sha)
    return estimate_plan(plan, checked.job)


def _name_from(path: Path) -> str:
    """A job name from a file name, within the names a job allows (reviews.csv -> reviews)."""
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "-", path.stem).strip("-._")[:64]
    return stem if stem and stem[0].isalnum() else "job"
