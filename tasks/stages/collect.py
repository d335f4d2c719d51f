"""collect: page a finished batch's results into results/<batch>.parquet, one normalized
record for every request the shard held, so no row can go silently missing."""

from __future__ import annotations

import gc
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from tasks.infra.crashpoints import WHILE_COLLECTING, crashpoint
from tasks.infra.errors import ProviderError
from tasks.infra.ledger import BatchRow
from tasks.infra.logs import LOGGER
from tasks.infra.parquet_writes import WriteBehind
from tasks.infra.records import CANCELLED, EXPIRED, FAILED, INVALID_OUTPUT, RESULT_SCHEMA, SUCCEEDED
from tasks.infra.run_layout import RunPaths
from tasks.providers.base import BatchProvider, BatchState
from tasks.providers.completion import RECORD_SCHEMA, records_table
from tasks.spec.answer_schema import answer_check


@contextmanager
def paused_gc() -> Iterator[None]:
    """Decoding result pages creates millions of small dicts without reference cycles; the
    cyclic GC would scan them over and over (3x slower decoding). Reference counting still
    frees them; the collector resumes afterwards."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def shard_members(paths: RunPaths, round_no: int, shard_no: int) -> pa.Array:
    """custom_ids sent in one shard of one round."""
    source = paths.manifest if round_no == 1 else paths.round_rows(round_no)
    table = pq.read_table(source, columns=["custom_id", "shard"], filters=[("shard", "=", shard_no)])
    return table.column("custom_id").combine_chunks()


def missing_outcome(state: BatchState, message: str | None) -> tuple[str, str, bool]:
    """(status, error, retryable) for a request the finished batch returned no result for."""
    if state == BatchState.REJECTED:
        return FAILED, f"the service rejected the whole file: {message}", False
    if state == BatchState.CANCELLED:
        return CANCELLED, "the batch was cancelled before this request was processed", False
    if state == BatchState.EXPIRED:
        return EXPIRED, "the batch expired before this request was processed", True
    if state == BatchState.GONE:
        return FAILED, f"the service no longer knows this batch: {message}", True
    return FAILED, "no result came back for this request although the batch finished", True


# The outcome of a request never sent because the run was cancelled first.
UNSENT_CANCELLED = (CANCELLED, "the run was cancelled before this request was sent", False)


def with_batch(records: pa.Table, batch_id: str | None, round_no: int) -> pa.Table:
    """RECORD_SCHEMA records -> RESULT_SCHEMA rows of one batch of one round."""
    columns = dict(zip(records.column_names, records.columns, strict=True))
    columns["batch_id"] = pa.repeat(pa.scalar(batch_id, pa.string()), records.num_rows)
    columns["round"] = pa.repeat(pa.scalar(round_no, pa.int32()), records.num_rows)
    return pa.table([columns[f.name] for f in RESULT_SCHEMA], schema=RESULT_SCHEMA)


class AnswerCheck:
    """For structured jobs: turns a succeeded record whose answer does not fit the schema (or
    was cut off) into `invalid_output`, keeping the raw text; retried if the job says so."""

    def __init__(self, schema: dict[str, Any], retry: bool) -> None:
        self.check_answer, self.retry = answer_check(schema), retry

    def __call__(self, record: dict[str, Any]) -> None:
        """One record (a dict), in place."""
        if record["status"] != SUCCEEDED:
            return
        reason = self.check_answer(record.get("response"), record.get("finish_reason"))
        if reason is not None:
            record.update(status=INVALID_OUTPUT, error=reason, retryable=self.retry)

    def table(self, records: pa.Table) -> pa.Table:
        """The same over a RECORD_SCHEMA table; only succeeded rows are looked at."""
        succeeded = pc.fill_null(pc.equal(records.column("status"), SUCCEEDED), False)
        at = np.flatnonzero(succeeded.to_numpy(zero_copy_only=False))
        if not len(at):
            return records
        answers = records.column("response").take(at).to_pylist()
        finish = records.column("finish_reason").take(at).to_pylist()
        reasons = [self.check_answer(a, f) for a, f in zip(answers, finish, strict=True)]
        bad = [i for i, reason in enumerate(reasons) if reason is not None]
        if not bad:
            return records
        invalid = np.zeros(records.num_rows, dtype=bool)
        invalid[at[bad]] = True
        why: list[str | None] = [None] * records.num_rows
        for i in bad:
            why[at[i]] = reasons[i]
        mask = pa.array(invalid)
        columns = {
            "status": pc.if_else(mask, INVALID_OUTPUT, records.column("status")),
            "error": pc.if_else(mask, pa.array(why, pa.string()), records.column("error")),
            "retryable": pc.if_else(mask, self.retry, records.column("retryable")),
        }
        return pa.table(
            [columns.get(name, records.column(name)) for name in records.column_names], schema=records.schema
        )


def answer_checker(schema: dict[str, Any] | None, retry: bool) -> AnswerCheck | None:
    """The AnswerCheck of a structured job; None for free text."""
    return None if schema is None else AnswerCheck(schema, retry)


class _FirstPerMember:
    """Keeps the first record of each member of the shard, across pages, vectorized."""

    def __init__(self, members: pa.Array) -> None:
        self.members = members
        self.seen = np.zeros(len(members), dtype=bool)

    def fresh(self, records: pa.Table) -> pa.Table:
        slot = pc.fill_null(pc.index_in(records.column("custom_id"), value_set=self.members), -1)
        slots = slot.to_numpy(zero_copy_only=False)
        at = np.flatnonzero(slots >= 0)
        at = at[~self.seen[slots[at]]]
        _, first = np.unique(slots[at], return_index=True)
        keep = np.sort(at[first])
        self.seen[slots[keep]] = True
        return records if len(keep) == records.num_rows else records.take(pa.array(keep))

    def absent(self) -> pa.Array:
        return self.members.filter(pa.array(~self.seen))


def collect_batch(
    provider: BatchProvider, paths: RunPaths, row: BatchRow, check: AnswerCheck | None = None
) -> Path:
    """Write the batch's results file (atomically); rerunning it rewrites the same file.
    A shard of a cancelled run that was never sent (no batch_id) gets its outcomes too."""
    assert row.state is not None
    if row.batch_id is None:
        return write_results(paths, row, [], UNSENT_CANCELLED, check)
    # A rejected file has no results, and a batch the service forgot has none to give.
    unread = row.state in (BatchState.REJECTED, BatchState.GONE)
    pages = provider.iter_result_tables(row.batch_id) if not unread else iter(())
    return write_results(paths, row, pages, missing_outcome(BatchState(row.state), row.message), check)


def write_results(
    paths: RunPaths,
    row: BatchRow,
    pages: Iterable[pa.Table | list[dict[str, Any]]],
    missing: tuple[str, str, bool],
    check: AnswerCheck | None = None,
) -> Path:
    """results/<batch>.parquet from pages of records (RECORD_SCHEMA tables or dicts): the first
    record per member of the shard, and the `missing` (status, error, retryable) outcome for
    members without one. Records of ids the shard did not send are dropped."""
    first = _FirstPerMember(shard_members(paths, row.round_no, row.shard_no))
    target = paths.results(row.batch_name)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".parquet.partial")
    with pq.ParquetWriter(partial, RESULT_SCHEMA) as writer, WriteBehind(writer) as behind:
        for page in pages:
            fresh = first.fresh(page if isinstance(page, pa.Table) else records_table(page))
            if check is not None:
                fresh = check.table(fresh)
            if fresh.num_rows:
                behind.write(with_batch(fresh, row.batch_id, row.round_no))
            crashpoint(WHILE_COLLECTING)
        absent = first.absent()
        if len(absent):
            behind.write(with_batch(missing_records(absent, *missing), row.batch_id, row.round_no))
    partial.replace(target)
    return target


def missing_records(custom_ids: pa.Array, status: str, error: str, retryable: bool) -> pa.Table:
    """The same outcome for each of `custom_ids` (no answer, no usage)."""
    n = len(custom_ids)
    given = {
        "custom_id": custom_ids,
        "status": pa.repeat(pa.scalar(status, pa.string()), n),
        "error": pa.repeat(pa.scalar(error, pa.string()), n),
        "retryable": pa.repeat(pa.scalar(retryable, pa.bool_()), n),
    }
    return pa.table([given.get(f.name, pa.nulls(n, f.type)) for f in RECORD_SCHEMA], schema=RECORD_SCHEMA)


# -- what the run stored at the service ---------------------------------------------------
def deleted_files_record(paths: RunPaths) -> Path:
    """One line per file of the run deleted at the service, `<batch name> <file id>`,
    appended as each is deleted: the count survives a crash and a rerun."""
    return paths.run_dir / "service-files-deleted.txt"


def service_files_deleted(paths: RunPaths) -> int:
    """How many of the run's files (request, output, error) were deleted at the service."""
    record = deleted_files_record(paths)
    if not record.exists():
        return 0
    lines = record.read_text(encoding="utf-8").splitlines()
    return len({line.split(" ")[-1] for line in lines if line.strip()})


def delete_service_files(provider: BatchProvider, paths: RunPaths, row: BatchRow) -> int:
    """Once a batch is collected, delete what it stored at the service: the uploaded request
    file and the files its results were written to (OpenAI: output and error file); storage
    is billed until then. Best effort: a failed deletion is a warning. Returns how many were
    deleted, each also recorded in `deleted_files_record`."""
    if not provider.capabilities.deletes_files:
        return 0
    files = [row.file_id] if row.file_id else []
    if row.batch_id is not None:
        try:
            files += provider.result_files(row.batch_id)
        except ProviderError as exc:
            LOGGER.warning("%s", exc)
    deleted = 0
    for file_id in dict.fromkeys(files):
        try:
            provider.delete_file(file_id)
        except ProviderError as exc:
            LOGGER.warning("%s", exc)
            continue
        with deleted_files_record(paths).open("a", encoding="utf-8") as record:
            record.write(f"{row.batch_name} {file_id}\n")
        deleted += 1
    return deleted
