"""join: the input table back, in input order, with one outcome per row appended.

The latest record of each custom_id (its last round) is matched to rows by Arrow
joins; the input is then streamed again and the aligned result columns are attached
batch by batch, so the output is written without Python objects per row.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from tasks.crashpoints import WHILE_JOINING, crashpoint
from tasks.errors import GrokBatchError
from tasks.records import OUTPUT_RESULT_COLUMNS, REJECTED, RESULT_SCHEMA
from tasks.run_layout import RunPaths, RunPlan, load_schema
from tasks.table_io import TableSource


def all_results(paths: RunPaths) -> pa.Table:
    files = sorted(paths.results_dir.glob("*.parquet")) if paths.results_dir.exists() else []
    if not files:
        return RESULT_SCHEMA.empty_table()
    return pa.concat_tables([pq.read_table(f, schema=RESULT_SCHEMA) for f in files])


def result_columns(paths: RunPaths, total_rows: int) -> pa.Table:
    """The appended columns for every input row, in input order.

    Positional, not a hash join: index_in maps each result's custom_id to its manifest
    position (= its row), and the record of the row's last round is taken into place.
    """
    manifest = pq.read_table(paths.manifest, columns=["custom_id", "reject_reason"])
    results = all_results(paths)
    positions = pc.index_in(results.column("custom_id"), value_set=manifest.column("custom_id"))
    if manifest.num_rows != total_rows or positions.null_count:
        raise GrokBatchError(
            f"internal error: the results in {paths.run_dir} do not match its {total_rows} rows; "
            "the run directory is kept for inspection"
        )
    row_of = positions.to_numpy(zero_copy_only=False).astype(np.int64)
    rounds = results.column("round").to_numpy(zero_copy_only=False).astype(np.int32)
    last_round = np.zeros(total_rows, dtype=np.int32)
    np.maximum.at(last_round, row_of, rounds)
    latest = np.flatnonzero(rounds == last_round[row_of])  # one record per row: its last round
    source = np.full(total_rows, -1, dtype=np.int64)
    source[row_of[latest]] = latest
    picked = results.take(pa.array(source, mask=source < 0))
    rejected = pc.is_valid(manifest.column("reject_reason"))
    status = pc.if_else(rejected, REJECTED, picked.column("status"))
    unresolved = pc.sum(pc.is_null(status)).as_py() or 0
    if unresolved:
        raise GrokBatchError(
            f"{unresolved} row(s) have no outcome yet; the run is not finished ({paths.run_dir})"
        )
    columns = {name: picked.column(name) for name in OUTPUT_RESULT_COLUMNS if name in picked.column_names}
    columns.update(
        custom_id=manifest.column("custom_id"),
        status=status,
        error=pc.if_else(rejected, manifest.column("reject_reason"), picked.column("error")),
        attempts=pc.if_else(rejected, pa.scalar(0, pa.int32()), pc.cast(picked.column("round"), pa.int32())),
    )
    return pa.table({name: columns[name] for name in OUTPUT_RESULT_COLUMNS})


def write_output(
    plan: RunPlan, paths: RunPaths, output: Path, *, overwrite: bool, prefix: str = ""
) -> pa.Table:
    """Write the joined table to `output` (atomically); returns the appended columns."""
    if output.exists() and not overwrite:
        raise GrokBatchError(f"output {output} already exists; pass --overwrite to replace it")
    results = result_columns(paths, plan.total_rows)
    schema = load_schema(paths.schema)
    source = TableSource(Path(plan.input_path))
    renamed = results.rename_columns([prefix + name for name in results.column_names])
    out_schema = pa.schema(list(schema) + list(renamed.schema))
    output.parent.mkdir(parents=True, exist_ok=True)
    partial = output.with_name(output.name + ".partial")
    offset = 0
    with pq.ParquetWriter(partial, out_schema) as writer:
        for batch in source.batches(schema=schema):
            aligned = renamed.slice(offset, batch.num_rows)
            table = pa.Table.from_batches([batch]).cast(schema)
            for name in aligned.column_names:
                table = table.append_column(name, aligned.column(name))
            writer.write_table(table)
            offset += batch.num_rows
            crashpoint(WHILE_JOINING)
    if offset != plan.total_rows:
        partial.unlink(missing_ok=True)
        raise GrokBatchError(
            f"{plan.input_path} now has {offset} rows but the run prepared {plan.total_rows}; "
            "the input changed during the run"
        )
    partial.replace(output)
    return results
