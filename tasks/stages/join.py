"""join: the input table back, in input order, with one outcome per row appended.

The input, the rows manifest and the results are streamed together in input order: each
chunk of rows finds its records (last round wins) with Arrow's index_in, and the
columns are attached without Python objects per row. Memory stays at a chunk, the one
or two shards under it, and the retried rows.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from tasks.infra.crashpoints import WHILE_JOINING, crashpoint
from tasks.infra.errors import GrokBatchError
from tasks.infra.ledger import round_and_shard
from tasks.infra.parquet_writes import WriteBehind
from tasks.infra.records import (
    MANIFEST_SCHEMA,
    OUTPUT_RESULT_COLUMNS,
    REJECTED,
    RESULT_SCHEMA,
    RESULT_TYPES,
    SUCCEEDED,
)
from tasks.infra.run_layout import RunPaths, RunPlan, load_schema
from tasks.infra.table_io import TableSource, file_sha256, open_table
from tasks.money.cost_columns import Pricing, sum_known
from tasks.money.pricing import price_sheet
from tasks.money.row_cache import CacheWriter
from tasks.spec.answer_schema import output_fields, typed_columns
from tasks.spec.job import JobSpec
from tasks.stages.collect import service_files_deleted
from tasks.stages.report import Tally


def _with_estimate(columns: list[str]) -> list[str]:
    """The result columns with `estimated_cost_usd` right after `cost_usd`."""
    if "estimated_cost_usd" in columns:
        return list(columns)
    at = columns.index("cost_usd") + 1
    return [*columns[:at], "estimated_cost_usd", *columns[at:]]


# The result columns of the output: cost_usd is what each row was billed, estimated_cost_usd
# the catalog's figure for the same tokens. (estimated_cost_usd belongs in
# tasks.infra.records.OUTPUT_RESULT_COLUMNS, whose names the clash checks read.)
OUTPUT_COLUMNS = _with_estimate(OUTPUT_RESULT_COLUMNS)
OUTPUT_TYPES = {**RESULT_TYPES, "estimated_cost_usd": pa.float64()}


class _RowStream:
    """Hands out exactly n rows at a time from a stream of record batches."""

    def __init__(self, batches: Iterator[pa.RecordBatch], schema: pa.Schema = MANIFEST_SCHEMA) -> None:
        self._batches, self._schema = batches, schema
        self._buffer: list[pa.RecordBatch] = []
        self._buffered = 0

    def take(self, count: int) -> pa.Table:
        while self._buffered < count:
            batch = next(self._batches, None)
            if batch is None:
                break
            self._buffer.append(batch)
            self._buffered += batch.num_rows
        table = pa.Table.from_batches(self._buffer, schema=self._schema)
        head, rest = table.slice(0, count), table.slice(count)
        self._buffer, self._buffered = rest.to_batches(), rest.num_rows
        return head


def latest_per_id(results: pa.Table) -> pa.Table:
    """One record per custom_id: the one from its last round."""
    if results.num_rows == 0:
        return results
    ids = results.column("custom_id")
    unique = pc.unique(ids)
    slot = pc.index_in(ids, value_set=unique).to_numpy(zero_copy_only=False).astype(np.int64)
    rounds = results.column("round").to_numpy(zero_copy_only=False).astype(np.int32)
    last_round = np.zeros(len(unique), dtype=np.int32)
    np.maximum.at(last_round, slot, rounds)
    return results.take(pa.array(np.flatnonzero(rounds == last_round[slot])))


class _Outcomes:
    """Finds each row's final record while the rows stream past in input order.

    Round-1 shards hold consecutive rows, so only the one or two shards under the
    current chunk are in memory; rows answered from the row cache are streamed in input
    order beside them; follow-up rounds (retried rows only) are loaded whole.
    """

    def __init__(self, paths: RunPaths, pricing: Pricing) -> None:
        self.paths, self.pricing = paths, pricing
        self.first_round: dict[int, Path] = {}
        cached = (
            pq.ParquetFile(paths.cached).iter_batches(batch_size=65_536) if paths.cached.exists() else None
        )
        self.cached = _RowStream(cached or iter(()), RESULT_SCHEMA)  # round 0, in input order
        later: list[pa.Table] = []
        for file in sorted(paths.results_dir.glob("*.parquet")) if paths.results_dir.exists() else []:
            round_no, shard_no = round_and_shard(file.stem)
            if round_no == 1:
                self.first_round[shard_no] = file
            else:
                later.append(pq.read_table(file, schema=RESULT_SCHEMA))
        every_later = pa.concat_tables(later) if later else RESULT_SCHEMA.empty_table()
        self.later = latest_per_id(every_later)
        # A retried row was billed for every attempt: what the attempts from round 2 on cost,
        # per custom_id (round 1's is added from its shard when the row is joined).
        billed = pa.table(
            {
                "custom_id": every_later.column("custom_id"),
                "billed": pricing.billed(every_later),
                "estimate": pricing.at_prices(every_later),
                "service": every_later.column("service_cost_usd"),
            }
        )
        self.later_billed = billed.group_by("custom_id").aggregate(
            [("billed", "sum"), ("estimate", "sum"), ("service", "sum")]
        )
        self._loaded: dict[int, pa.Table] = {}

    def _shard(self, shard_no: int) -> pa.Table:
        if shard_no not in self._loaded:
            if len(self._loaded) >= 2:  # rows only move forward: drop the oldest shard
                del self._loaded[min(self._loaded)]
            file = self.first_round.get(shard_no)
            self._loaded[shard_no] = (
                pq.read_table(file, schema=RESULT_SCHEMA) if file else RESULT_SCHEMA.empty_table()
            )
        return self._loaded[shard_no]

    def columns_for(self, manifest: pa.Table) -> pa.Table:
        """The appended columns for the manifest rows of one chunk, in their order."""
        shard_numbers = pc.unique(manifest.column("shard").drop_null()).to_pylist()
        is_cached = pc.fill_null(manifest.column("cached"), False).to_numpy(zero_copy_only=False)
        cached = self.cached.take(int(is_cached.sum()))
        candidates = pa.concat_tables([self._shard(n) for n in sorted(shard_numbers)] + [self.later, cached])
        ids = manifest.column("custom_id")
        first = len(candidates) - self.later.num_rows - cached.num_rows
        in_later = pc.index_in(ids, value_set=self.later.column("custom_id").combine_chunks())
        in_first = pc.index_in(ids, value_set=candidates.column("custom_id").slice(0, first).combine_chunks())
        pick = pc.if_else(pc.is_valid(in_later), pc.add(in_later, first), in_first)
        if cached.num_rows:  # the k-th cached row of the chunk is the k-th row of `cached`
            cached_at = first + self.later.num_rows + np.cumsum(is_cached) - 1
            pick = pc.if_else(pa.array(is_cached), pa.array(cached_at), pc.cast(pick, pa.int64()))
        picked = candidates.take(pick)
        rejected = pc.is_valid(manifest.column("reject_reason"))
        status = pc.if_else(rejected, REJECTED, picked.column("status"))
        if status.null_count:
            raise GrokBatchError(
                f"{status.null_count} row(s) have no outcome yet; the run in {self.paths.run_dir} "
                "is not finished"
            )
        attempts = pc.if_else(rejected, pa.scalar(0, pa.int32()), pc.cast(picked.column("round"), pa.int32()))
        from_cache = pc.fill_null(pc.and_(pc.invert(rejected), pc.equal(attempts, 0)), False)
        cost, estimate, service = self._billed(ids, lambda: candidates.take(in_first), picked, from_cache)
        columns = {name: picked.column(name) for name in OUTPUT_COLUMNS if name in picked.column_names}
        columns.update(
            custom_id=ids,
            status=status,
            error=pc.if_else(rejected, manifest.column("reject_reason"), picked.column("error")),
            cost_usd=cost,
            estimated_cost_usd=estimate,
            service_cost_usd=service,
            attempts=attempts,
            from_cache=from_cache,
        )
        return pa.table({name: columns[name] for name in OUTPUT_COLUMNS})

    def _billed(
        self, ids: pa.Array, round_one: Callable[[], pa.Table], picked: pa.Table, from_cache: pa.Array
    ) -> tuple[pa.Array, pa.Array, pa.Array]:
        """(cost_usd, estimated_cost_usd, service_cost_usd) per row over all its attempts: the
        final record's, or for a retried row round 1's (`round_one()`, taken only when a row
        was retried) plus every later round's. cost_usd is the bill (the service's figure, the
        estimate where it gives none); a row answered from the row cache cost nothing now."""
        pricing = self.pricing
        cost = pc.if_else(from_cache, 0.0, pricing.billed(picked))
        estimate = pc.if_else(from_cache, 0.0, pricing.at_prices(picked))
        service = pc.if_else(
            from_cache, pc.multiply(picked.column("service_cost_usd"), 0.0), picked.column("service_cost_usd")
        )
        slot = pc.index_in(ids, value_set=self.later_billed.column("custom_id").combine_chunks())
        retried = pc.and_(pc.is_valid(slot), pc.greater(picked.column("round"), 1))
        if not pc.any(retried).as_py():
            return cost, estimate, service
        later = self.later_billed.take(slot)
        first = round_one()
        cost = pc.if_else(retried, sum_known(later.column("billed_sum"), pricing.billed(first)), cost)
        estimate = pc.if_else(
            retried, sum_known(later.column("estimate_sum"), pricing.at_prices(first)), estimate
        )
        service = pc.if_else(
            retried, sum_known(later.column("service_sum"), first.column("service_cost_usd")), service
        )
        return cost, estimate, service


def write_output(
    plan: RunPlan,
    paths: RunPaths,
    output: Path,
    *,
    overwrite: bool,
    cache_folder: Path | None = None,
) -> Tally:
    """Stream the input and the outcomes into `output` (atomically); returns the totals
    (with how many of the run's files collection deleted at the service). Succeeded answers
    of this run go into the row cache at `cache_folder`."""
    job = JobSpec.model_validate(plan.job)
    if output.exists() and not overwrite:
        raise GrokBatchError(f"output {output} already exists; pass --overwrite to replace it")
    source = _unchanged_input(plan)
    schema = load_schema(paths.schema)
    pricing = Pricing(price_sheet(job.model, job.catalog_path), batch=plan.mode == "batch")
    outcomes = _Outcomes(paths, pricing)
    manifest = _RowStream(pq.ParquetFile(paths.manifest).iter_batches(batch_size=65_536))
    columns = _ResultColumns(job)
    output.parent.mkdir(parents=True, exist_ok=True)
    partial = output.with_name(output.name + ".partial")
    tally = Tally()
    cache = CacheWriter(cache_folder, plan.run_key) if cache_folder is not None else None
    try:
        with (
            pq.ParquetWriter(partial, pa.schema(list(schema) + columns.fields)) as writer,
            WriteBehind(writer) as behind,
        ):
            for batch in source.batches(schema=schema):
                rows = manifest.take(batch.num_rows)
                if rows.num_rows != batch.num_rows:
                    break
                appended = outcomes.columns_for(rows)
                tally.add(appended, saved_usd=pricing.saved(appended))
                behind.write(columns.attach(pa.Table.from_batches([batch]).cast(schema), appended))
                if cache is not None:
                    _remember(cache, rows, appended)
                crashpoint(WHILE_JOINING)
        if tally.rows != plan.total_rows:
            raise GrokBatchError(
                f"{plan.input_path} no longer has the {plan.total_rows} rows the run prepared; "
                "the input changed during the run"
            )
    except Exception:
        partial.unlink(missing_ok=True)  # ours and half written: nobody can use it
        if cache is not None:
            cache.close(keep=False)
        raise
    if cache is not None:
        cache.close()
    partial.replace(output)
    tally.service_files_deleted = service_files_deleted(paths)
    tally.service_files_kept = job.keep_service_files
    return tally


def _unchanged_input(plan: RunPlan) -> TableSource:
    """The run's input, refused when it is not the file the run prepared."""
    source = open_table(plan.input_path, encoding=plan.encoding)
    source.check_readable()
    if file_sha256(source.path) != plan.input_sha256:  # same row count is not the same rows
        raise GrokBatchError(
            f"{plan.input_path} changed since the run prepared it; answers would land on the wrong rows. "
            f"Put the original file back and resume run {plan.run_key}, or start a new run"
        )
    return source


class _ResultColumns:
    """The columns appended to every input row: the results, then the typed answer fields."""

    def __init__(self, job: JobSpec) -> None:
        prefix = job.result_prefix
        self.answer_schema = job.answer_schema
        self.typed_fields = output_fields(self.answer_schema) if self.answer_schema is not None else []
        self.fields = [pa.field(prefix + name, OUTPUT_TYPES[name]) for name in OUTPUT_COLUMNS]
        self.fields += [pa.field(prefix + f.name, f.type) for f in self.typed_fields]

    def attach(self, table: pa.Table, appended: pa.Table) -> pa.Table:
        columns = list(appended.columns)
        if self.answer_schema is not None:
            texts = pc.if_else(
                pc.equal(appended.column("status"), SUCCEEDED), appended.column("response"), None
            )
            typed = typed_columns(texts.to_pylist(), self.answer_schema)
            columns += [typed[f.name] for f in self.typed_fields]
        for field, column in zip(self.fields, columns, strict=True):
            table = table.append_column(field, column)
        return table


def _remember(cache: CacheWriter, rows: pa.Table, appended: pa.Table) -> None:
    """Add this chunk's freshly answered (not cached, succeeded) rows to the row cache."""
    fresh = pc.and_(
        pc.equal(appended.column("status"), SUCCEEDED),
        pc.and_(pc.invert(appended.column("from_cache")), pc.is_valid(rows.column("request_key"))),
    )
    if pc.any(fresh).as_py():
        cache.add(rows.column("request_key").filter(fresh).combine_chunks(), appended.filter(fresh))
