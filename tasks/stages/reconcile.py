"""reconcile: once every batch of a round is collected, send the rows worth another try
(retryable failures, missing and expired rows) as a follow-up round of new shards."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from tasks.infra.ledger import BatchRow, Ledger
from tasks.infra.records import RESULT_SCHEMA
from tasks.infra.run_layout import RunPaths
from tasks.stages.shards import ShardWriter


def round_results(paths: RunPaths, rows: list[BatchRow]) -> pa.Table:
    tables = [pq.read_table(paths.results(r.batch_name)) for r in rows]
    return pa.concat_tables(tables) if tables else RESULT_SCHEMA.empty_table()


def plan_follow_up(
    ledger: Ledger,
    paths: RunPaths,
    run_key: str,
    round_no: int,
    max_attempts: int,
    shard_max_lines: int,
    shard_max_bytes: int,
) -> int | None:
    """Write round `round_no + 1` for the rows to retry and record it; None when none are left."""
    rows = ledger.batches(run_key, round_no)
    if round_no >= max_attempts:
        return None
    results = round_results(paths, rows)
    retry = pc.filter(results.column("custom_id"), pc.fill_null(results.column("retryable"), False))
    if len(retry) == 0:
        return None
    retry_ids = set(retry.to_pylist())
    next_round = round_no + 1
    writer = ShardWriter(paths, next_round, shard_max_lines, shard_max_bytes)
    member_ids: list[str] = []
    member_shards: list[int] = []
    try:
        for row in rows:
            keyed = [
                (json.loads(line)["custom_id"], line) for line in _lines_of(paths.shard_file(row.shard_path))
            ]
            picked = [(custom_id, line) for custom_id, line in keyed if custom_id in retry_ids]
            if not picked:
                continue
            shard_of = writer.write(pa.array([line for _, line in picked], type=pa.string()))
            member_ids.extend(custom_id for custom_id, _ in picked)
            member_shards.extend(int(s) for s in shard_of)
    finally:
        shards = writer.close()
    members = pa.table(
        {"custom_id": pa.array(member_ids, pa.string()), "shard": pa.array(member_shards, pa.int32())}
    )
    pq.write_table(members, paths.round_rows(next_round))
    paths.publish(
        paths.round_rows(next_round), *[Path(s.path) for s in shards]
    )  # before the ledger names them
    ledger.plan_batches(run_key, next_round, [(s.shard_no, s.path, s.lines) for s in shards])
    ledger.update_run(run_key, round_no=next_round)
    return next_round


def _lines_of(path: Path) -> list[str]:
    # Split on "\n" only: prompts may hold U+0085 or U+2028, which JSON leaves unescaped.
    return [line + "\n" for line in path.read_bytes().decode("utf-8").split("\n") if line.strip()]
