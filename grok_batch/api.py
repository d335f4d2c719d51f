"""grok-batch from Python: a DataFrame, an Arrow table or a file in, the same table back with an
answer, usage, cost and status on every row.

The same path as the command line (`flows.here`): the same ledger, lease and row cache, so the
same call made twice pays once, and after a kernel restart the same call re-attaches to the
batches already submitted. A DataFrame or table is written once to a content-addressed Parquet
file under the data directory: the same data is the same file, hence the same run.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, overload

from flows.cli.render import run_with_progress
from flows.here import resume_here, run_here
from tasks.doors.control import cancel_run, find_run, run_status
from tasks.doors.drive import WaitPolicy
from tasks.infra.errors import GrokBatchError
from tasks.infra.ledger import Ledger, default_ledger_url
from tasks.infra.run_layout import data_root as data_root_of
from tasks.infra.table_io import TableSource, open_table
from tasks.infra.work_copies import local_for
from tasks.spec.job import JobSpec, build_job
from tasks.stages.prepare import identify
from tasks.start import dry_run, pinned

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

    from tasks.money.estimate import Estimate

JobLike = JobSpec | Mapping[str, Any] | str | os.PathLike[str] | None


@overload
def run(
    data: Any,
    job: JobLike = None,
    *,
    wait: Literal[True] = True,
    output: str | os.PathLike[str] | None = None,
    data_dir: str | os.PathLike[str] | None = None,
    progress: bool = True,
    **fields: Any,
) -> pd.DataFrame: ...


@overload
def run(
    data: Any,
    job: JobLike = None,
    *,
    wait: Literal[False],
    output: str | os.PathLike[str] | None = None,
    data_dir: str | os.PathLike[str] | None = None,
    progress: bool = True,
    **fields: Any,
) -> Run: ...


def run(
    data: Any,
    job: JobLike = None,
    *,
    wait: bool = True,
    output: str | os.PathLike[str] | None = None,
    data_dir: str | os.PathLike[str] | None = None,
    progress: bool = True,
    **fields: Any,
) -> pd.DataFrame | Run:
    """Run every row of `data` through the job and return the table with the answers.

    `data` is a pandas DataFrame, a pyarrow Table, or a path to a table file. `job` is a JobSpec,
    a dict of job fields, or a job YAML path; any job field can also be given as a keyword
    (`prompt=`, `model=`, `params=`, `columns=`, `mode=` ...), on top of `job`.

    With `wait=True` (the default) it returns a DataFrame aligned to the input (same index, same
    order; the input columns, then custom_id, status, response, usage, cost ...). With
    `wait=False` it submits and returns a `Run` to check on later, even from another process.

    Example:

        >>> import grok_batch
        >>> out = grok_batch.run(df, prompt="Classify: {{ text }}", model="grok-4.3")
        >>> out[["text", "status", "response"]].head()
    """
    spec = _job(job, fields)
    root = data_root_of(str(data_dir) if data_dir else None)
    source, index = _source(data, root)
    target = (
        local_for(os.fspath(output))
        if output
        else _api_output(source, spec, root)
        if index is not None
        else None
    )
    policy = WaitPolicy(wait=wait, poll_interval_s=1.0, max_poll_interval_s=30.0)
    # An output of our own naming is ours to rewrite (a rerun of the cell joins again, paying nothing).
    overwrite = output is None and target is not None

    def call(on_progress: Any) -> dict[str, Any]:
        return run_here(source, spec, target, overwrite, root, policy, on_progress)

    result = run_with_progress(call) if progress else call(lambda _progress: None)
    handle = Run(result["run_key"], root, index)
    if not wait:
        return handle
    return handle.result()


def estimate(
    data: Any, job: JobLike = None, *, data_dir: str | os.PathLike[str] | None = None, **fields: Any
) -> Estimate:
    """Rows, tokens and cost at batch and standard prices, before anything is sent.

    Example:

        >>> grok_batch.estimate(df, prompt="Classify: {{ text }}", model="grok-4.3").cost_usd
    """
    spec = _job(job, fields)
    root = data_root_of(str(data_dir) if data_dir else None)
    source, _ = _source(data, root)
    return dry_run(source, spec, root / "runs")


@dataclass
class Run:
    """A run in the ledger, to check on, wait for, read or cancel, from any process.

    Example:

        >>> run = grok_batch.run(df, prompt="...", model="grok-4.3", wait=False)
        >>> run.status()["rows_by_status"]
        >>> out = run.result()          # waits, then the table with the answers
        >>> grok_batch.Run.attach(run.run_key).result()   # later, in another process
    """

    run_key: str
    data_root: Path
    index: Any = None  # the input DataFrame's index, restored on the result

    @classmethod
    def attach(cls, run_key: str, data_dir: str | os.PathLike[str] | None = None) -> Run:
        """The run whose key starts with `run_key`, from the ledger."""
        root = data_root_of(str(data_dir) if data_dir else None)
        with closing(Ledger(default_ledger_url(root))) as ledger:
            return cls(find_run(ledger, run_key)["run_key"], root)

    def status(self, refresh: bool = True) -> dict[str, Any]:
        """State, rounds, rows by outcome so far, output; live from the service with `refresh`."""
        with closing(Ledger(default_ledger_url(self.data_root))) as ledger:
            detail = run_status(ledger, self.run_key, refresh=refresh).detail
        if detail is None:
            raise GrokBatchError(f"run {self.run_key} is not in the ledger of {self.data_root}")
        return detail.as_dict()

    def wait(self, timeout_s: float = 26 * 3600.0, progress: bool = True) -> Run:
        """Wait here until every row has its outcome and the output is written."""
        policy = WaitPolicy(wait=True, poll_interval_s=1.0, max_poll_interval_s=30.0, max_wait_s=timeout_s)

        def call(on_progress: Any) -> dict[str, Any]:
            return resume_here(self.data_root, self.run_key, None, True, policy, on_progress)

        result = run_with_progress(call) if progress else call(lambda _progress: None)
        if result["state"] != "finished":
            raise GrokBatchError(f"run {self.run_key} is still in progress after {timeout_s:.0f} s")
        return self

    def result(self, as_arrow: bool = False) -> Any:
        """The output table (waiting first if needed): a DataFrame aligned to the input, or
        with `as_arrow` a pyarrow Table."""
        import pyarrow.parquet as pq

        status = self.status(refresh=False)
        if status["state"] != "finished" or not status["output_exists"]:
            self.wait()
            status = self.status(refresh=False)
        table = pq.read_table(status["output_path"])
        if as_arrow:
            return table
        frame = table.to_pandas()
        if self.index is not None and len(self.index) == len(frame):
            frame.index = self.index
        return frame

    def cancel(self) -> bool:
        """Stop the run: nothing more is sent, finished results are kept. False when it had
        already finished (nothing to cancel)."""
        with closing(Ledger(default_ledger_url(self.data_root))) as ledger:
            return not cancel_run(ledger, self.run_key).nothing_to_cancel


def _job(job: JobLike, fields: Mapping[str, Any]) -> JobSpec:
    if isinstance(job, JobSpec):
        return job.model_copy(update=dict(fields)) if fields else job
    if job is None or isinstance(job, Mapping):
        return build_job(None, {**(dict(job) if job else {}), **fields}, source="the job given to grok_batch")
    return build_job(Path(job), dict(fields))


def _source(data: Any, root: Path) -> tuple[TableSource, Any]:
    """The table as a file the pipeline reads, and the input's index to put back (None for a file)."""
    if isinstance(data, str | os.PathLike):
        return open_table(os.fspath(data)), None  # a path or a URL (s3://…)
    import pandas as pd
    import pyarrow as pa

    if isinstance(data, pd.DataFrame):
        index = data.index
        table = pa.Table.from_pandas(data, preserve_index=False)
    elif isinstance(data, pa.Table):
        index, table = pd.RangeIndex(data.num_rows), data
    else:
        raise GrokBatchError(
            "grok_batch.run takes a pandas DataFrame, a pyarrow Table or a file path, "
            f"not {type(data).__name__}"
        )
    return TableSource(_content_addressed(table, root / "api-inputs")), index


def _content_addressed(table: pa.Table, folder: Path) -> Path:
    """Write the table as Parquet named by its content: the same data is the same file."""
    import pyarrow.parquet as pq

    folder.mkdir(parents=True, exist_ok=True)
    scratch = folder / f".writing-{os.getpid()}.parquet"
    pq.write_table(table, scratch)
    with scratch.open("rb") as handle:
        digest = hashlib.file_digest(handle, "sha256").hexdigest()[:20]
    target = folder / f"table-{digest}.parquet"
    if target.exists():
        scratch.unlink()
    else:
        scratch.replace(target)
    return target


def _api_output(source: TableSource, job: JobSpec, root: Path) -> Path:
    """outbox/<run key>.parquet: each run of the same data (another prompt, another server)
    has its own output, which only that run rewrites."""
    return root / "outbox" / f"{identify(source, pinned(job, source)).run_key}.parquet"
