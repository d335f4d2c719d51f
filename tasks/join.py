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


def latest_results(paths: RunPaths) -> pa.Table:
    """One record per custom_id: the one from its last round, with attempts = that round."""
    files = sorted(paths.results_dir.glob("*.parquet")) if paths.results_dir.exists() else []
    results = (
        pa.concat_tables([pq.read_table(f, schema=RESULT_SCHEMA) for f in files])
        if files
        else RESULT_SCHEMA.empty_table()
    )
    last_round = results.group_by("custom_id").aggregate([("round", "max")])
    latest = results.join(
        last_round, keys=["custom_id", "round"], right_keys=["custom_id", "round_max"], join_type="inner"
    )
    return latest.append_column("attempts", pc.cast(latest.column("round"), pa.int32()))


def result_columns(paths: RunPaths, total_rows: int) -> pa.Table:
    """The appended columns for every input row, in input order."""
    manifest = pq.read_table(paths.manifest, columns=["custom_id", "row_index", "reject_reason"])
    latest = latest_results(paths).drop_columns(["retryable", "round"])
    joined = manifest.join(latest, keys="custom_id", join_type="left outer").sort_by("row_index")
    if joined.num_rows != total_rows or not np.array_equal(
        joined.column("row_index").to_numpy(), np.arange(total_rows, dtype=np.int64)
    ):
        raise GrokBatchError(
            f"internal error: {joined.num_rows} outcomes for {total_rows} rows; the run directory "
            f"{paths.run_dir} is kept for inspection"
        )
    rejected = pc.is_valid(joined.column("reject_reason"))
    status = pc.if_else(rejected, REJECTED, joined.column("status"))
    error = pc.if_else(rejected, joined.column("reject_reason"), joined.column("error"))
    attempts = pc.if_else(rejected, pa.scalar(0, pa.int32()), joined.column("attempts"))
    unresolved = pc.sum(pc.is_null(status)).as_py() or 0
    if unresolved:
        raise GrokBatchError(
            f"{unresolved} row(s) have no outcome yet; the run is not finished ({paths.run_dir})"
        )
    columns = {name: joined.column(name) for name in OUTPUT_RESULT_COLUMNS if name in joined.column_names}
    columns.update(status=status, error=error, attempts=attempts)
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
