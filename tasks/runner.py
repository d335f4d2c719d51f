"""Carries out a run's lifecycle (tasks.lifecycle) with the stage functions: register and
prepare a run, advance it by one pass of the actions the lifecycle names, join it.

Flows and the CLI drive these (through Prefect tasks); nothing here needs Prefect.
Every step is idempotent, so any driver may crash and any later one continue. Drivers
hold the run's lease (`with ledger.lease(run_key)`) around prepare, advance and finish.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, replace
from pathlib import Path

from tasks.infra.errors import GrokBatchError, InputError, ProviderError
from tasks.infra.ledger import BatchRow, Ledger
from tasks.infra.logs import LOGGER
from tasks.infra.run_layout import RunPaths, RunPlan
from tasks.infra.work_copies import local_for, store_for, url_for
from tasks.lifecycle import Action, BatchState, RunState, ShardView, Step, next_action_after, next_actions
from tasks.money.row_cache import cache_root, namespace
from tasks.providers.base import BatchProvider
from tasks.spec.job import JobSpec
from tasks.stages.answer_sync import SyncLimits, answer_planned
from tasks.stages.collect import answer_checker, collect_batch, delete_service_files, paused_gc
from tasks.stages.export import export_output, export_path
from tasks.stages.join import write_output
from tasks.stages.poll import poll_open
from tasks.stages.reconcile import plan_follow_up
from tasks.stages.report import RunSummary, render_markdown, summarize
from tasks.stages.report_html import html_report_path, render_html_report
from tasks.stages.submit import submit_planned


@dataclass(frozen=True)
class RunHandle:
    """What a driver needs to advance a run: its key, directory and plan, and the input
    file its current command names (the plan keeps where it was first prepared from)."""

    run_key: str
    run_dir: Path
    plan: RunPlan
    input_path: str = ""

    @property
    def input(self) -> str:
        return self.input_path or self.plan.input_path

    @property
    def paths(self) -> RunPaths:
        return RunPaths(self.run_dir)

    @property
    def job(self) -> JobSpec:
        return JobSpec.model_validate(self.plan.job)


@dataclass(frozen=True)
class Progress:
    round_no: int
    requests: int
    finished: int
    batches: int
    batches_open: int
    complete: bool
    states: dict[str, int]

    @property
    def fraction(self) -> float:
        return self.finished / self.requests if self.requests else 1.0


def report_path(output: Path) -> Path:
    """The report written beside the output: reviews.parquet -> reviews.report.md."""
    return output.with_name(output.stem + ".report.md")


def check_output_path(output: Path, overwrite: bool) -> None:
    """Refuse before any work when the output would clobber a file or cannot be written (on a
    store: a missing bucket or a denied write is found by writing a probe object)."""
    store = store_for(output)
    if output.suffix.lower() not in (".parquet", ".pq"):
        raise InputError(f"output {url_for(output)} must end in .parquet")
    if store is not None:
        if store.is_dir():
            raise InputError(f"output {store} is a folder; name a .parquet object in it")
        if store.exists() and not overwrite:
            raise InputError(f"output {store} already exists; pass --overwrite to replace it")
        store.probe_write()
        return
    if output.is_dir():  # --overwrite replaces a file, never a folder
        raise InputError(f"output {output} is a folder; name a .parquet file in it")
    if output.exists() and not overwrite:
        raise InputError(f"output {output} already exists; pass --overwrite to replace it")
    parent = output.parent if str(output.parent) else Path(".")
    existing = next((p for p in [parent, *parent.parents] if p.exists()), Path("."))
    if not existing.is_dir() or not os.access(existing, os.W_OK):
        raise InputError(f"output {output} cannot be written: {existing} is not a writable folder")


def handle_for(ledger: Ledger, key: str) -> RunHandle:
    run = ledger.run(key)
    if run is None:
        raise GrokBatchError(f"no run {key} in the ledger {ledger.display_url}")
    run_dir = local_for(run["run_dir"])  # recorded as its store URL when the data is on one
    RunPaths(run_dir).pull()  # what other workers finished of it
    if not RunPaths(run_dir).plan.exists():
        raise GrokBatchError(f"run {key} was never prepared ({run['run_dir']} has no run.json); run it again")
    return RunHandle(key, run_dir, RunPlan.load(RunPaths(run_dir)), run["input_path"])


def progress_of(ledger: Ledger, handle: RunHandle) -> Progress:
    rows = ledger.batches(handle.run_key)
    round_no = max((r.round_no for r in rows), default=1)
    current = [r for r in rows if r.round_no == round_no]
    states: dict[str, int] = {}
    for row in current:
        key = row.state or row.step
        states[key] = states.get(key, 0) + 1
    run = ledger.run(handle.run_key) or {}
    return Progress(
        round_no=round_no,
        requests=sum(r.lines for r in current),
        finished=sum(r.lines if r.step == Step.COLLECTED else r.finished for r in current),
        batches=len(current),
        batches_open=sum(1 for r in current if r.step != Step.COLLECTED),
        complete=next_actions(run.get("state", RunState.OPEN), handle.plan.mode, False, []) == [Action.JOIN],
        states=states,
    )


COLLECT_THREADS = 4  # result pages are mostly waiting on the network: overlap a few batches


def collect_finished(ledger: Ledger, provider: BatchProvider, handle: RunHandle) -> int:
    """Collect every batch that reached a terminal state; returns how many were collected.
    What a collected batch stored at the service (its request file, its output and error
    files) is deleted then, unless the job says `keep_service_files`."""
    ready = [
        row for row in ledger.batches(handle.run_key) if row.step == Step.CREATED and _view(row).terminal
    ]
    for row in ready:
        if row.state == BatchState.EXPIRED and row.batch_id and not provider.capabilities.expiry_is_final:
            # Expiry is judged by our clock: stop the service from finishing (and billing)
            # rows that the next round sends again.
            _best_effort(provider.cancel, row.batch_id)
    with paused_gc(), ThreadPoolExecutor(max_workers=COLLECT_THREADS, thread_name_prefix="collect") as pool:
        check = answer_checker(handle.job.answer_schema, handle.job.retry_invalid_output)
        futures = {pool.submit(collect_batch, provider, handle.paths, row, check): row for row in ready}
        for future in as_completed(futures):
            future.result()  # the first failure stops the pass; collected batches stay recorded
            row = futures[future]
            handle.paths.publish(handle.paths.results(row.batch_name))  # before the service copy goes
            ledger.update_batch(row.batch_name, step=Step.COLLECTED)
            if not handle.job.keep_service_files:
                delete_service_files(provider, handle.paths, row)
    return len(ready)


def _best_effort(call: Callable[[str], None], argument: str) -> None:
    try:
        call(argument)
    except ProviderError as exc:
        LOGGER.warning("%s", exc)


def reconcile(ledger: Ledger, handle: RunHandle) -> bool:
    """When the current round is all collected, plan the follow-up round or mark the run
    complete. Returns True when every row has its final outcome."""
    run = ledger.run(handle.run_key) or {}
    if run.get("state") in (RunState.COMPLETE, RunState.FINISHED):
        return True
    round_no = int(run.get("round_no") or 1)
    rows: list[BatchRow] = ledger.batches(handle.run_key, round_no)
    if any(r.step != Step.COLLECTED for r in rows):
        return False
    job = handle.job
    if not ledger.cancel_requested(handle.run_key):  # cancelled: no follow-up round
        next_round = plan_follow_up(
            ledger,
            handle.paths,
            handle.run_key,
            round_no,
            job.max_attempts,
            job.shard_max_lines,
            job.shard_max_bytes,
        )
        if next_round is not None:
            return False
    ledger.update_run(handle.run_key, state=RunState.COMPLETE)
    return True


StageCall = Callable[[Ledger, BatchProvider, RunHandle], object]


@dataclass(frozen=True)
class Stages:
    """The stage functions a driver runs, one per lifecycle action; flows pass their
    Prefect task versions."""

    submit: StageCall
    poll: StageCall
    collect: StageCall
    reconcile: Callable[[Ledger, RunHandle], object]
    answer: StageCall  # mode sync: in place of submit, poll and collect
    close_unsent: StageCall

    def call(self, action: Action, ledger: Ledger, provider: BatchProvider, handle: RunHandle) -> None:
        if action == Action.RECONCILE:
            self.reconcile(ledger, handle)
            return
        stage: dict[Action, StageCall] = {
            Action.SUBMIT: self.submit,
            Action.POLL: self.poll,
            Action.COLLECT: self.collect,
            Action.ANSWER: self.answer,
            Action.CLOSE_UNSENT: self.close_unsent,
        }
        stage[action](ledger, provider, handle)


SYNC_SLICE_S = 20.0  # a sync pass returns this often, so drivers can show progress


def sync_limits(job: JobSpec) -> SyncLimits:
    return SyncLimits(job.sync_concurrency, job.sync_requests_per_minute, job.sync_tokens_per_minute)


def answer_sync(ledger: Ledger, provider: BatchProvider, handle: RunHandle) -> int:
    if not provider.capabilities.sync_chat:
        raise GrokBatchError(f"mode sync needs a provider that answers chat completions, not {provider.name}")
    job = handle.job
    return answer_planned(
        ledger,
        provider,
        handle.run_key,
        handle.paths,
        sync_limits(job),
        check=answer_checker(job.answer_schema, job.retry_invalid_output),
        budget_s=SYNC_SLICE_S,
    )


def close_unsent(ledger: Ledger, provider: BatchProvider, handle: RunHandle) -> None:
    """After `grok-batch cancel`: nothing more is created; shards never sent end cancelled.
    A shard caught mid-creation is looked up first, so a batch created just before is kept."""
    for row in ledger.batches(handle.run_key):
        if row.batch_id is not None:
            continue
        found = provider.find_batch(row.batch_name) if row.step == Step.CREATING else None
        if found is not None:
            ledger.update_batch(
                row.batch_name, step=Step.CREATED, batch_id=found, state=BatchState.VALIDATING
            )
            _best_effort(provider.cancel, found)
        else:
            ledger.update_batch(row.batch_name, step=Step.CREATED, state=BatchState.CANCELLED)


PLAIN_STAGES = Stages(
    submit=lambda ledger, provider, handle: submit_planned(ledger, provider, handle.run_key),
    poll=lambda ledger, provider, handle: poll_open(ledger, provider, handle.run_key),
    collect=collect_finished,
    reconcile=reconcile,
    answer=answer_sync,
    close_unsent=close_unsent,
)


def _view(row: BatchRow) -> ShardView:
    return ShardView(row.step, row.state, row.batch_id)


def _next_actions(ledger: Ledger, handle: RunHandle) -> list[Action]:
    run = ledger.run(handle.run_key) or {}
    return next_actions(
        run.get("state", RunState.OPEN),
        handle.plan.mode,
        bool(run.get("cancel_requested")),
        [_view(row) for row in ledger.batches(handle.run_key)],
    )


def watch(
    ledger: Ledger, provider: BatchProvider, handle: RunHandle, stages: Stages = PLAIN_STAGES
) -> tuple[Progress, bool]:
    """For a run whose home (a suspended flow run) waits: poll only, and say whether the
    home has work to do now (anything but polling), so it can be woken for it."""
    if Action.POLL in _next_actions(ledger, handle):
        stages.call(Action.POLL, ledger, provider, handle)
    work = [a for a in _next_actions(ledger, handle) if a != Action.POLL]
    return progress_of(ledger, handle), bool(work)


def advance(
    ledger: Ledger, provider: BatchProvider, handle: RunHandle, stages: Stages = PLAIN_STAGES
) -> Progress:
    """One idempotent pass: each action the lifecycle names, in pass order, re-reading the
    ledger after each (so a flow records no empty task runs)."""
    done: Action | None = None
    while True:
        run = ledger.run(handle.run_key) or {}
        action = next_action_after(
            done,
            run.get("state", RunState.OPEN),
            handle.plan.mode,
            bool(run.get("cancel_requested")),
            [_view(row) for row in ledger.batches(handle.run_key)],
        )
        if action is None:
            return progress_of(ledger, handle)
        stages.call(action, ledger, provider, handle)
        done = action


def finish(ledger: Ledger, handle: RunHandle, output: Path, overwrite: bool) -> RunSummary:
    """Join the outcomes onto the input, write output and report, close the run."""
    job = handle.job
    cache_folder = cache_root(handle.run_dir.parent) / namespace(job)
    # The file this command named: the same content as the prepared one (write_output checks).
    plan = replace(handle.plan, input_path=handle.input)
    tally = write_output(plan, handle.paths, output, overwrite=overwrite, cache_folder=cache_folder)
    summary = summarize(
        tally,
        ledger.batches(handle.run_key),
        run_key=handle.run_key,
        input_path=handle.input,
        output_path=url_for(output),
        model=job.model,
        mode=handle.plan.mode,
    )
    # CSV/Excel copies from the written Parquet; what one cannot hold is a note, never a cut.
    inputs = (local_for(handle.input), local_for(handle.plan.input_path))
    summary.notes += export_output(output, job.output_formats, overwrite=overwrite, keep=inputs)
    report = render_markdown(summary)
    handle.paths.report.write_text(report, encoding="utf-8")
    report_path(output).parent.mkdir(parents=True, exist_ok=True)
    report_path(output).write_text(report, encoding="utf-8")
    try:  # the pictures: never worth failing a finished run for
        page = render_html_report(
            summary,
            output,
            answer_schema=job.answer_schema,
            prefix=job.result_prefix,
            id_column=job.id_column,
        )
        handle.paths.report.with_suffix(".html").write_text(page, encoding="utf-8")
        html_report_path(output).write_text(page, encoding="utf-8")
    except Exception as exc:
        LOGGER.warning("run %s: the HTML report could not be written: %s", handle.run_key, exc)
    written = [output, report_path(output), html_report_path(output)]
    publish_output(output, written + [export_path(output, fmt) for fmt in job.output_formats])
    handle.paths.publish(handle.paths.report.parent)
    ledger.update_run(handle.run_key, state=RunState.FINISHED, output_path=url_for(output))
    return summary


def publish_output(output: Path, written: list[Path]) -> None:
    """An output named by URL was written to its working copy here: upload it and the files
    beside it (reports, copies); the Parquet last, so its presence says the rest is there."""
    if store_for(output) is None:
        return
    for path in sorted(written, key=lambda p: p == output):
        store = store_for(path)
        if store is not None and path.is_file():
            store.upload(path)
