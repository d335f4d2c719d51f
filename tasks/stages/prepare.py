"""prepare: input table -> JSONL request shards + rows manifest, streaming in Arrow.

Request lines are assembled column-wise: the JSON around the prompt is the same for
every row, so only custom_id and prompt are escaped (by Arrow kernels) and joined
between constant pieces; shard files are written straight from Arrow's buffers.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from tasks.infra.errors import InputError
from tasks.infra.processes import process_alive
from tasks.infra.records import MANIFEST_SCHEMA, OUTPUT_RESULT_COLUMNS, RESULT_SCHEMA, SUCCEEDED
from tasks.infra.run_layout import RunPaths, RunPlan, ShardInfo, run_key, save_schema
from tasks.infra.table_io import TableSource, can_be_id, file_sha256, invalid_utf8
from tasks.money.catalog import model_info
from tasks.money.row_cache import KEY_TYPE, STORED_FIELDS, CacheIndex, cache_root, namespace, request_keys
from tasks.spec.answer_schema import output_fields
from tasks.spec.endpoints import server_url
from tasks.spec.job import MAX_SHARD_LINES, JobSpec
from tasks.stages.shards import ShardWriter, TooManyShardsError

MAX_REQUEST_BYTES = 25 * 1024 * 1024  # xAI's per-request limit (reference §3)
MAX_SHARDS = 10_000  # request files one run plans; more is a setting gone wrong (shard_max_lines: 10)
# Prompt-size estimate for the context-window check: low on purpose (English runs ~4 bytes
# a token), so a row is refused only when it surely cannot fit.
BYTES_PER_TOKEN = 4
_SAFE_ID = r"^[A-Za-z0-9_.:-]{1,40}$"
_CONTROL = r"[\x00-\x1f]"
_NEEDS_ESCAPE = r'["\\\x00-\x1f]'


def json_escape(values: pa.Array) -> pa.Array:
    """Each string escaped for use inside a JSON string literal, without Python per row.

    One regex pass finds the rows that need escaping at all; only those go through the
    replacements (most prompts hold no quote, backslash or control character).
    """
    special = pc.match_substring_regex(values, _NEEDS_ESCAPE)
    if not pc.any(special).as_py():
        return values
    subset = pc.filter(values, special)
    escaped = pc.replace_substring(subset, "\\", "\\\\")
    for raw, quoted in (('"', '\\"'), ("\n", "\\n"), ("\r", "\\r"), ("\t", "\\t")):
        escaped = pc.replace_substring(escaped, raw, quoted)
    has_control = pc.match_substring_regex(escaped, _CONTROL)
    if pc.any(has_control).as_py():  # rare: other control characters, escaped by json
        originals = subset.to_pylist()
        fixed = [
            json.dumps(text, ensure_ascii=False)[1:-1] if flag else None
            for text, flag in zip(originals, has_control.to_pylist(), strict=True)
        ]
        escaped = pc.if_else(has_control, pa.array(fixed, type=pa.string()), escaped)
    return pc.replace_with_mask(values, special, escaped)


def request_line_parts(job: JobSpec) -> tuple[str, str, str]:
    """The constant JSON around custom_id and prompt in every request line (quotes
    included: custom_ids never need escaping, prompts go through json_escape)."""
    head = '{"custom_id":"'
    messages = '[{"role":"system","content":' + json.dumps(job.system, ensure_ascii=False) + "},"
    body = (
        '","method":"POST","url":"/v1/chat/completions","body":{"model":'
        + json.dumps(job.model, ensure_ascii=False)
        + ',"messages":'
        + (messages if job.system else "[")
        + '{"role":"user","content":"'
    )
    params = "".join(
        "," + json.dumps(key) + ":" + json.dumps(value, ensure_ascii=False)
        for key, value in job.request_params.items()
    )
    tail = '"}]' + params + "}}\n"
    return head, body, tail


def make_custom_ids(prefix: str, row_index: pa.Array, ids: pa.Array | None) -> pa.Array:
    """`prefix-<id>` for short plain ids, `prefix~<hash>` for others, `prefix-<row>` without ids;
    all in [A-Za-z0-9_.:~-], so they go into JSON as they are."""
    if ids is None:
        return pc.binary_join_element_wise(prefix + "-", pc.cast(row_index, pa.string()), "")
    text = pc.cast(ids, pa.string())
    unreadable = invalid_utf8(text)
    if unreadable is not None:  # not UTF-8 (the row is rejected): never plain, hashed from its bytes
        text = pc.if_else(unreadable, pa.scalar(None, pa.string()), text)
    safe = pc.fill_null(pc.match_substring_regex(text, _SAFE_ID), False)
    plain = pc.binary_join_element_wise(prefix + "-", text, "")
    if pc.all(safe).as_py():
        return plain
    raw = pc.cast(pc.cast(ids, pa.string()), pa.binary())
    hashed = [
        None if ok else f"{prefix}~{hashlib.sha256(value or b'').hexdigest()[:24]}"
        for ok, value in zip(safe.to_pylist(), raw.to_pylist(), strict=True)
    ]
    return pc.if_else(safe, plain, pa.array(hashed, type=pa.string()))


@dataclass
class _Rendered:
    custom_ids: pa.Array
    row_index: pa.Array
    shard: pa.Array
    reject_reason: pa.Array
    request_keys: pa.Array
    cached: pa.Array
    prompt_tokens_estimate: int

    def manifest_batch(self) -> pa.RecordBatch:
        columns = [
            self.custom_ids,
            self.row_index,
            self.shard,
            self.reject_reason,
            self.request_keys,
            self.cached,
        ]
        return pa.record_batch(columns, schema=MANIFEST_SCHEMA)


def check_result_columns(schema: pa.Schema, job: JobSpec, source: str) -> None:
    """Added columns (results, then typed answer fields) may not reuse an input column's name."""
    added = list(OUTPUT_RESULT_COLUMNS)
    if job.answer_schema is not None:
        added += [f.name for f in output_fields(job.answer_schema)]
    clashes = [job.result_prefix + c for c in added if job.result_prefix + c in schema.names]
    if clashes:
        raise InputError(
            f"{source}: input column(s) {', '.join(map(repr, clashes))} clash with the result columns "
            "grok-batch adds; set `result_prefix` in the job (or --result-prefix), e.g. 'grok_'"
        )


@dataclass(frozen=True)
class RunIdentity:
    """What makes two commands the same run: the input's content (read the same way), the job
    and who answers it."""

    run_key: str
    input_sha: str


def identify(source: TableSource, job: JobSpec, input_sha: str | None = None) -> RunIdentity:
    """The run this input and job make (the one place a run key is computed): the input's
    content, the job, and the server that answers it (a job's URL, else the environment's),
    so the same table sent elsewhere is another run. `input_sha` saves hashing the file
    again when the caller already did (the inbox)."""
    source.check_readable()
    input_sha = input_sha or file_sha256(source.path)
    answered_by = job.model_copy(update={"base_url": server_url(job.provider, job.base_url)})
    return RunIdentity(run_key(input_sha, answered_by.fingerprint(), source.encoding), input_sha)


def prepare_run(source: TableSource, job: JobSpec, runs_root: Path, input_sha: str | None = None) -> RunPlan:
    """Render the table into request shards under runs_root/<run_key>, or reuse that run."""
    identity = identify(source, job, input_sha)
    key, input_sha = identity.run_key, identity.input_sha
    paths = RunPaths(runs_root / key)
    if paths.plan.exists():
        return RunPlan.load(paths)
    schema = source.schema()
    label = source.shown
    job.template.check_schema(schema, label)
    check_result_columns(schema, job, label)
    _check_id_column(schema, job.id_column, label)
    _check_shard_count(source.row_count(), job, label)
    return _prepare_staged(source, job, schema, paths, key, input_sha, cache_root(runs_root) / namespace(job))


def _check_id_column(schema: pa.Schema, column: str | None, label: str) -> None:
    if column is None:
        return
    if column not in schema.names:
        raise InputError(
            f"{label}: id_column {column!r} is not a column of the table. "
            f"Columns present: {', '.join(schema.names)}"
        )
    kind = schema.field(column).type
    if not can_be_id(kind):
        raise InputError(
            f"{label}: id_column {column!r} has type {kind}, which cannot be an id; "
            "use a column of text or numbers"
        )


def _check_shard_count(rows: int | None, job: JobSpec, label: str) -> None:
    """Refuse a table whose row count (where the file states it) surely needs more request
    files than a run plans; the shard writer enforces the same limit on every other table."""
    if rows is not None and -(-rows // job.shard_max_lines) > MAX_SHARDS:
        raise InputError(
            f"{label}: {rows:,} rows at shard_max_lines {job.shard_max_lines:,} need more than "
            f"{MAX_SHARDS:,} request files, the most one run plans; raise shard_max_lines "
            f"(at most {MAX_SHARD_LINES:,}) or split the table"
        )


def _prepare_staged(
    source: TableSource,
    job: JobSpec,
    schema: pa.Schema,
    paths: RunPaths,
    key: str,
    input_sha: str,
    cache_folder: Path,
) -> RunPlan:
    # One staging folder per process: `estimate` prepares without the run's lease, so two
    # processes may prepare the same run at once; the first to rename its folder wins.
    staging = paths.run_dir.with_name(f"{paths.run_dir.name}.staging-{os.getpid()}")
    _remove_dead_staging(paths.run_dir)
    try:
        plan = _write_staged(source, job, schema, RunPaths(staging), paths, key, input_sha, cache_folder)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    try:
        staging.replace(paths.run_dir)
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)
        if not paths.plan.exists():
            raise
        return RunPlan.load(paths)  # another process prepared the same run first
    return plan


def _remove_dead_staging(run_dir: Path) -> None:
    """Leftovers of a prepare whose process died (a crash, a SIGKILL)."""
    for leftover in run_dir.parent.glob(f"{run_dir.name}.staging*"):
        pid = leftover.name.rpartition("-")[2]
        if not pid.isdigit() or not process_alive(int(pid)):
            shutil.rmtree(leftover, ignore_errors=True)


# One streaming pass over the input feeds four outputs at once (shards, manifest, cache
# hits, totals); split further, the pieces would have to share all of that state.
def _write_staged(
    source: TableSource,
    job: JobSpec,
    schema: pa.Schema,
    staged: RunPaths,
    paths: RunPaths,
    key: str,
    input_sha: str,
    cache_folder: Path,
) -> RunPlan:
    label = source.shown
    staged.requests_dir.mkdir(parents=True)
    writer = ShardWriter(staged, 1, job.shard_max_lines, job.shard_max_bytes, max_shards=MAX_SHARDS)
    head, middle, tail = request_line_parts(job)
    info = model_info(job.model, job.catalog_path)
    context_window = info.context_window if info else None
    prefix = key[:8]
    total = rejected = prompt_tokens = 0
    id_chunks: list[pa.Array] = []
    cache = CacheIndex(cache_folder) if job.cache else None
    hits: list[tuple[pa.Array, pa.Array]] = []  # (custom_ids, request_keys) answered before
    try:
        with pq.ParquetWriter(staged.manifest, MANIFEST_SCHEMA) as manifest:
            for batch in source.batches(schema):
                row_index = pa.array(np.arange(total, total + batch.num_rows, dtype=np.int64))
                ids = None
                if job.id_column is not None:
                    ids = batch.column(job.id_column)
                    _check_no_null_ids(ids, total, job.id_column, label)
                    id_chunks.append(pc.cast(ids, pa.string()))
                rendered = _render_batch(
                    batch, job, writer, (head, middle, tail), prefix, row_index, ids, context_window, cache
                )
                manifest.write_batch(rendered.manifest_batch())
                if pc.any(rendered.cached).as_py():
                    hit = rendered.cached
                    hits.append((rendered.custom_ids.filter(hit), rendered.request_keys.filter(hit)))
                total += batch.num_rows
                rejected += len(rendered.reject_reason) - rendered.reject_reason.null_count
                prompt_tokens += rendered.prompt_tokens_estimate
    except TooManyShardsError as exc:  # before the file past the limit is written
        raise InputError(
            f"{label}: the first {exc.lines:,} requests at shard_max_lines {job.shard_max_lines:,} "
            f"already need more than {MAX_SHARDS:,} request files, the most one run plans; raise "
            f"shard_max_lines (at most {MAX_SHARD_LINES:,}) or shard_max_bytes, or split the table"
        ) from None
    finally:
        shards = writer.close()  # also on errors: no write left pending, no thread left
    if total == 0:
        raise InputError(f"{label} has a header but no data rows")
    if id_chunks:
        _check_unique_ids(pa.chunked_array(id_chunks), job.id_column or "", label)
    save_schema(schema, staged.schema)
    cached_rows = _write_cached(staged, cache, hits) if cache is not None else 0
    plan = RunPlan(
        run_key=key,
        input_path=source.recorded_as,
        input_sha256=input_sha,
        job=job.model_dump(mode="json"),
        total_rows=total,
        rejected_rows=rejected,
        encoding=source.encoding,
        mode=job.resolve_mode(
            total - rejected - cached_rows, batch_accepted=info.batch_accepted if info else True
        ),
        cached_rows=cached_rows,
        prompt_tokens_estimate=prompt_tokens,
        shards=[
            ShardInfo(s.round_no, s.shard_no, str(paths.shard(s.round_no, s.shard_no)), s.lines, s.bytes)
            for s in shards
        ],
    )
    plan.save(staged)
    return plan


def _write_cached(staged: RunPaths, cache: CacheIndex, hits: list[tuple[pa.Array, pa.Array]]) -> int:
    """cached.parquet: the stored answers of the rows answered before, as round-0 records."""
    if not hits:
        return 0
    custom_ids = pa.concat_arrays([ids for ids, _ in hits])
    keys = pa.concat_arrays([k for _, k in hits])
    stored = cache.records(keys)
    slot = pc.index_in(keys, value_set=stored.column("request_key").combine_chunks())
    found = stored.take(slot)
    n = len(custom_ids)
    columns = {name: found.column(name) for name in STORED_FIELDS}
    columns.update(
        custom_id=custom_ids,
        status=pa.array([SUCCEEDED] * n, pa.string()),
        error=pa.nulls(n, pa.string()),
        retryable=pa.array([False] * n, pa.bool_()),
        batch_id=pa.nulls(n, pa.string()),
        round=pa.array(np.zeros(n, dtype=np.int32)),
    )
    pq.write_table(
        pa.table({f.name: columns[f.name] for f in RESULT_SCHEMA}, schema=RESULT_SCHEMA), staged.cached
    )
    return n


def _render_batch(
    batch: pa.RecordBatch,
    job: JobSpec,
    writer: ShardWriter,
    line_parts: tuple[str, str, str],
    prefix: str,
    row_index: pa.Array,
    ids: pa.Array | None,
    context_window: int | None,
    cache: CacheIndex | None,
) -> _Rendered:
    head, middle, tail = line_parts
    custom_ids = make_custom_ids(prefix, row_index, ids)
    batch, unreadable = _unreadable_cells(batch, job.template.columns, ids, job.id_column)
    prompts = job.template.render(batch)
    lines = pc.binary_join_element_wise(head, custom_ids, middle, json_escape(prompts), tail, "")
    reasons = pc.if_else(
        pc.greater(pc.binary_length(lines), MAX_REQUEST_BYTES),
        "request larger than the 25 MB xAI accepts per request",
        pa.scalar(None, pa.string()),
    )
    system_bytes = len((job.system or "").encode("utf-8"))
    estimated = pc.divide(pc.add(pc.binary_length(prompts), system_bytes), BYTES_PER_TOKEN)
    if context_window is not None:
        reasons = pc.if_else(
            pc.greater(estimated, context_window),
            f"prompt of an estimated >{context_window} tokens exceeds {job.model}'s context window",
            reasons,
        )
    empty = pc.equal(pc.utf8_length(pc.utf8_trim_whitespace(prompts)), 0)
    reasons = pc.if_else(empty, "empty prompt: the template rendered no text for this row", reasons)
    if unreadable is not None:  # last: its cells were blanked, so the prompt may look empty
        reasons = pc.coalesce(unreadable, reasons)
    valid = pc.is_null(reasons)
    keys = pc.if_else(valid, request_keys(prompts), pa.scalar(None, KEY_TYPE))
    cached = pc.and_(valid, cache.hits(keys)) if cache is not None else pa.array(np.zeros(len(keys), bool))
    keep = pc.and_(valid, pc.invert(cached))
    shard = np.full(batch.num_rows, -1, dtype=np.int32)
    keep_mask = keep.to_numpy(zero_copy_only=False)
    if keep_mask.any():
        shard[keep_mask] = writer.write(lines.filter(keep))
    shard_array = pc.if_else(keep, pa.array(shard, type=pa.int32()), pa.scalar(None, pa.int32()))
    tokens = int(pc.sum(pc.filter(estimated, keep)).as_py() or 0)
    return _Rendered(custom_ids, row_index, shard_array, reasons, keys, cached, tokens)


def _unreadable_cells(
    batch: pa.RecordBatch, template_columns: list[str], ids: pa.Array | None, id_column: str | None
) -> tuple[pa.RecordBatch, pa.Array | None]:
    """The reason of each row holding text that is not valid UTF-8 in a column the run reads
    (the first such column names it; null elsewhere), and the batch with those template cells
    blanked so the rest of the rows render: a line holding such bytes is not JSON, and the
    service would refuse the whole file for it."""
    reasons: pa.Array | None = None
    columns = [(name, batch.column(name)) for name in template_columns]
    if ids is not None and id_column not in template_columns:
        columns.append((id_column or "", ids))
    for name, column in columns:
        bad = invalid_utf8(column)
        if bad is None:
            continue
        reason = pc.if_else(
            bad, f"column {name!r} holds text that is not valid UTF-8", pa.scalar(None, pa.string())
        )
        reasons = reason if reasons is None else pc.coalesce(reasons, reason)
        if name in template_columns:
            blanked = pc.if_else(bad, pa.scalar(None, pa.large_binary()), pc.cast(column, pa.large_binary()))
            index = batch.schema.get_field_index(name)
            batch = batch.set_column(index, name, pc.cast(blanked, pa.large_string()))
    return batch, reasons


def _check_no_null_ids(ids: pa.Array, offset: int, column: str, label: str) -> None:
    empty = pc.or_kleene(pc.is_null(ids), pc.equal(pc.cast(ids, pa.string()), ""))
    count = pc.sum(empty).as_py() or 0
    if count:
        first = pc.index(empty, True).as_py()
        raise InputError(
            f"{label}: id_column {column!r} is empty on data row {offset + first + 1} "
            f"({count} empty id(s) in this block); every row needs an id"
        )


def _check_unique_ids(ids: pa.ChunkedArray, column: str, label: str) -> None:
    counts = pc.value_counts(ids)
    repeated = pc.filter(counts, pc.greater(counts.field("counts"), 1))
    if len(repeated):
        values = pc.cast(repeated.field("values")[:5], pa.binary()).to_pylist()
        examples = ", ".join(repr(v.decode("utf-8", errors="replace")) for v in values)
        raise InputError(
            f"{label}: id_column {column!r} has {len(repeated)} duplicated value(s), e.g. {examples}; "
            "ids must be unique so every answer finds its row"
        )
