"""collect: page a finished batch's results into results/<batch>.parquet, one normalized
record for every request the shard held, so no row can go silently missing."""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from tasks.infra.crashpoints import WHILE_COLLECTING, crashpoint
from tasks.infra.errors import ProviderError
from tasks.infra.ledger import BatchRow
from tasks.infra.logs import LOGGER
from tasks.infra.records import CANCELLED, EXPIRED, FAILED, INVALID_OUTPUT, RESULT_SCHEMA, SUCCEEDED
from tasks.infra.run_layout import RunPaths
from tasks.providers.base import BatchProvider, BatchState
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
    return FAILED, "no result came back for this request although the batch finished", True


# The outcome of a request never sent because the run was cancelled first.
UNSENT_CANCELLED = (CANCELLED, "the run was cancelled before this request was sent", False)

_RECORD_FIELDS = [f for f in RESULT_SCHEMA if f.name not in ("batch_id", "round")]


def records_table(records: list[dict[str, Any]], batch_id: str | None, round_no: int) -> pa.Table:
    """Column by column (Table.from_pylist costs ~25 us a row; this a few)."""
    columns = {f.name: pa.array([r.get(f.name) for r in records], type=f.type) for f in _RECORD_FIELDS}
    columns["batch_id"] = pa.array([batch_id] * len(records), type=pa.string())
    columns["round"] = pa.array([round_no] * len(records), type=pa.int32())
    return pa.table({f.name: columns[f.name] for f in RESULT_SCHEMA})


AnswerCheck = Callable[[dict[str, Any]], None]


def answer_checker(schema: dict[str, Any] | None, retry: bool) -> AnswerCheck | None:
    """For structured jobs: turn a succeeded record whose answer does not fit the schema (or
    was cut off) into `invalid_output`, keeping the raw text; retried if the job says so."""
    if schema is None:
        return None
    check_answer = answer_check(schema)

    def check(record: dict[str, Any]) -> None:
        if record["status"] != SUCCEEDED:
            return
        reason = check_answer(record.get("response"), record.get("finish_reason"))
        if reason is not None:
            record.update(status=INVALID_OUTPUT, error=reason, retryable=retry)

    return check


def collect_batch(
    provider: BatchProvider, paths: RunPaths, row: BatchRow, check: AnswerCheck | None = None
) -> Path:
    """Write the batch's results file (atomically); rerunning it rewrites the same file.
    A shard of a cancelled run that was never sent (no batch_id) gets its outcomes too."""
    assert row.state is not None
    if row.batch_id is None:
        return write_results(paths, row, [], UNSENT_CANCELLED, check)
    pages = provider.iter_results(row.batch_id) if row.state != BatchState.REJECTED else iter(())
    return write_results(paths, row, pages, missing_outcome(BatchState(row.state), row.message), check)


def write_results(
    paths: RunPaths,
    row: BatchRow,
    pages: Iterable[list[dict[str, Any]]],
    missing: tuple[str, str, bool],
    check: AnswerCheck | None = None,
) -> Path:
    """results/<batch>.parquet from pages of records: the first record per member of the
    shard, and the `missing` (status, error, retryable) outcome for members without one."""
    members = shard_members(paths, row.round_no, row.shard_no)
    wanted = set(members.to_pylist())
    seen: set[str] = set()
    target = paths.results(row.batch_name)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".parquet.partial")
    with pq.ParquetWriter(partial, RESULT_SCHEMA) as writer:
        for page in pages:
            fresh = [r for r in page if r["custom_id"] in wanted and r["custom_id"] not in seen]
            seen.update(r["custom_id"] for r in fresh)
            if check is not None:
                for record in fresh:
                    check(record)
            if fresh:
                writer.write_table(records_table(fresh, row.batch_id, row.round_no))
            crashpoint(WHILE_COLLECTING)
        absent = pc.filter(members, pc.invert(pc.is_in(members, pa.array(list(seen), pa.string()))))
        if len(absent):
            status, error, retryable = missing
            records = [
                {"custom_id": cid, "status": status, "error": error, "retryable": retryable}
                for cid in absent.to_pylist()
            ]
            writer.write_table(records_table(records, row.batch_id, row.round_no))
    partial.replace(target)
    return target


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
