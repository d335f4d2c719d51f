"""One function per measured case. Each runs in its own process (bench/__main__.py starts
it), so its peak RSS is its own; setup that is not being measured happens before the clock.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from tasks.infra.table_io import TableSource
from tasks.spec.job import JobSpec, build_job
from tasks.stages.prepare import prepare_run  # imported here, not under a clock

PROMPT = "Classify the sentiment of this review: {{ text }}"
Case = Callable[[Path, Path], dict[str, Any]]  # (input parquet, scratch dir) -> figures


def _job() -> JobSpec:
    return build_job(
        None, {"name": "bench", "model": "grok-4.3", "prompt": PROMPT, "params": {"max_tokens": 16}}
    )


def _prepared(source: Path, scratch: Path) -> Any:
    return prepare_run(TableSource(source), _job(), scratch / "runs")


# -- prepare -------------------------------------------------------------------------------
def prepare_grok_batch(source: Path, scratch: Path) -> dict[str, Any]:
    start = time.perf_counter()
    plan = _prepared(source, scratch)
    seconds = time.perf_counter() - start
    return {"rows": plan.total_rows, "seconds": seconds, "bytes": sum(s.bytes for s in plan.shards)}


def prepare_pandas_baseline(source: Path, scratch: Path) -> dict[str, Any]:
    """The straightforward way: pandas rows, an f-string and json.dumps per row."""
    import pandas as pd

    start = time.perf_counter()
    frame = pd.read_parquet(source)
    out = scratch / "pandas.jsonl"
    written = 0
    with out.open("w", encoding="utf-8") as handle:
        for index, row in enumerate(frame.itertuples(index=False)):
            line = {
                "custom_id": f"bench-{index}",
                "method": "POST",
                "url": "/v1/chat/completions",
                "body": {
                    "model": "grok-4.3",
                    "messages": [
                        {"role": "user", "content": f"Classify the sentiment of this review: {row.text}"}
                    ],
                    "max_tokens": 16,
                },
            }
            written += handle.write(json.dumps(line, ensure_ascii=False) + "\n")
    return {"rows": len(frame), "seconds": time.perf_counter() - start, "bytes": written}


def io_floor(source: Path, scratch: Path, target_bytes: int | None = None) -> dict[str, Any]:
    """pyarrow reading the table plus writing as many bytes as grok-batch's shards hold."""
    target_bytes = target_bytes if target_bytes is not None else int(os.environ["BENCH_SHARD_BYTES"])
    chunk = np.random.default_rng(0).integers(32, 127, 8 << 20, dtype=np.uint8).tobytes()
    start = time.perf_counter()
    table = pq.read_table(source)
    left = target_bytes
    with (scratch / "floor.bin").open("wb") as handle:
        while left > 0:
            left -= handle.write(chunk[: min(left, len(chunk))])
    return {"rows": table.num_rows, "seconds": time.perf_counter() - start, "bytes": target_bytes}


# -- collect and join ----------------------------------------------------------------------
def _fake_results(plan: Any, run_dir: Path) -> None:
    """Results for every sent row, shuffled, in results/<batch>.parquet (what collect writes)."""
    from tasks.infra.ledger import batch_name
    from tasks.infra.records import RESULT_SCHEMA

    manifest = pq.read_table(run_dir / "rows.parquet", columns=["custom_id", "shard"])
    rng = np.random.default_rng(1)
    (run_dir / "results").mkdir(exist_ok=True)
    for shard in plan.shards:
        ids = manifest.filter(pa.compute.equal(manifest.column("shard"), shard.shard_no)).column("custom_id")
        ids = ids.take(pa.array(rng.permutation(len(ids))))
        n = len(ids)
        columns = {
            "custom_id": ids,
            "status": pa.array(["succeeded"] * n),
            "response": pa.compute.binary_join_element_wise("positive (emulated answer ", ids, ")", ""),
            "finish_reason": pa.array(["stop"] * n),
            "model": pa.array(["grok-4.3"] * n),
            "prompt_tokens": pa.array(rng.integers(20, 200, n)),
            "completion_tokens": pa.array(rng.integers(5, 20, n)),
            "reasoning_tokens": pa.array(np.zeros(n, dtype=np.int64)),
            "cached_tokens": pa.array(np.zeros(n, dtype=np.int64)),
            "service_cost_usd": pa.array(rng.random(n) / 1e4),
            "batch_id": pa.array([f"batch_{shard.shard_no}"] * n),
            "error": pa.nulls(n, pa.string()),
            "retryable": pa.array([False] * n),
            "round": pa.array(np.ones(n, dtype=np.int32)),
        }
        table = pa.table({f.name: columns[f.name].cast(f.type) for f in RESULT_SCHEMA})
        pq.write_table(table, run_dir / "results" / f"{batch_name(plan.run_key, 1, shard.shard_no)}.parquet")


def join_grok_batch(source: Path, scratch: Path) -> dict[str, Any]:
    from tasks.infra.run_layout import RunPaths
    from tasks.stages.join import write_output

    plan = _prepared(source, scratch)
    paths = RunPaths(scratch / "runs" / plan.run_key)
    _fake_results(plan, paths.run_dir)
    start = time.perf_counter()
    write_output(plan, paths, scratch / "out.parquet", overwrite=True)
    seconds = time.perf_counter() - start
    return {"rows": plan.total_rows, "seconds": seconds, "bytes": (scratch / "out.parquet").stat().st_size}


def join_pandas_baseline(source: Path, scratch: Path) -> dict[str, Any]:
    """The same join with pandas: read everything, merge on custom_id, sort, write."""
    import pandas as pd

    plan = _prepared(source, scratch)
    run_dir = scratch / "runs" / plan.run_key
    _fake_results(plan, run_dir)
    start = time.perf_counter()
    table = pd.read_parquet(source)
    manifest = pd.read_parquet(run_dir / "rows.parquet", columns=["custom_id", "row_index"])
    results = pd.concat([pd.read_parquet(p) for p in sorted((run_dir / "results").glob("*.parquet"))])
    joined = manifest.merge(results, on="custom_id", how="left").sort_values("row_index")
    out = pd.concat(
        [table.reset_index(drop=True), joined.drop(columns=["row_index"]).reset_index(drop=True)], axis=1
    )
    out.to_parquet(scratch / "pandas-out.parquet", index=False)
    return {"rows": len(out), "seconds": time.perf_counter() - start}


def _result_page_bodies(custom_ids: list[str], rng: np.random.Generator, per_page: int = 1000) -> list[bytes]:
    """GET /v1/batches/{id}/results bodies for these requests, shuffled, laid out as the
    emulator writes them (xAI's documented shape; an answer and usage that differ per row)."""
    order = rng.permutation(len(custom_ids))
    prompt = rng.integers(20, 200, len(custom_ids))
    output = rng.integers(5, 20, len(custom_ids))
    entries = []
    for i in order.tolist():
        cid = json.dumps(custom_ids[i])
        p, o = int(prompt[i]), int(output[i])
        ticks = p * 1000 + o * 5000
        completion = (
            f'{{"id":"emu-{i:012x}","object":"chat.completion","created":1762801725,"model":"grok-4.3",'
            f'"choices":[{{"index":0,"message":{{"role":"assistant","content":"positive (emulated answer '
            f'{i:012x})","refusal":null}},"finish_reason":"stop"}}],"usage":{{"prompt_tokens":{p},'
            f'"completion_tokens":{o},"total_tokens":{p + o},"prompt_tokens_details":{{"text_tokens":{p},'
            f'"audio_tokens":0,"image_tokens":0,"cached_tokens":0}},"completion_tokens_details":'
            f'{{"reasoning_tokens":0,"audio_tokens":0,"accepted_prediction_tokens":0,'
            f'"rejected_prediction_tokens":0}},"num_sources_used":0,"cost_in_usd_ticks":{ticks}}},'
            f'"system_fingerprint":"fp_emulator"}}'
        )
        entries.append(
            f'{{"batch_request_id":{cid},"batch_result":{{"response":{{"chat_get_completion":{completion}}}}}}}'
        )
    bodies = []
    for start in range(0, len(entries), per_page):
        token = json.dumps(str(start + per_page) if start + per_page < len(entries) else None)
        page = (
            '{"results":['
            + ",".join(entries[start : start + per_page])
            + '],"pagination_token":'
            + token
            + "}"
        )
        bodies.append(page.encode())
    return bodies


def _served_pages(bodies: list[bytes]) -> Any:
    """The real XaiProvider, its GET of result pages answered from `bodies` (no network):
    collect runs the provider's paging, decoding and normalizing as against the service."""
    import orjson

    from tasks.providers.xai import XaiProvider

    class ServedPages(XaiProvider):
        def _get(self, path: str, params: dict[str, Any] | None = None) -> Any:
            return orjson.loads(bodies[int((params or {}).get("pagination_token") or 0) // 1000])

    return ServedPages("http://127.0.0.1:9/v1", api_key="bench", max_retries=0)


def collect_grok_batch(source: Path, scratch: Path) -> dict[str, Any]:
    """Result pages (the HTTP bodies, shuffled) -> results Parquet, per shard. Also times
    decoding the same bodies with orjson alone (the floor of any path through Python objects)."""
    import gc

    import orjson

    from tasks.infra.ledger import BatchRow, batch_name
    from tasks.infra.run_layout import RunPaths
    from tasks.stages.collect import collect_batch, paused_gc

    plan = _prepared(source, scratch)
    paths = RunPaths(scratch / "runs" / plan.run_key)
    manifest = pq.read_table(paths.manifest, columns=["custom_id", "shard"])
    rng = np.random.default_rng(2)
    seconds = decode_seconds = 0.0
    written = 0
    for shard in plan.shards:
        ids = manifest.filter(pa.compute.equal(manifest.column("shard"), shard.shard_no)).column("custom_id")
        bodies = _result_page_bodies(ids.to_pylist(), rng)  # setup: not timed
        provider = _served_pages(bodies)
        name = batch_name(plan.run_key, 1, shard.shard_no)
        row = BatchRow(
            name,
            plan.run_key,
            1,
            shard.shard_no,
            shard.path,
            shard.lines,
            "created",
            "f",
            "b",
            "done",
            0,
            None,
        )
        gc.collect()
        start = time.perf_counter()
        with paused_gc():  # as runner.collect_finished runs it
            written += collect_batch(provider, paths, row).stat().st_size
        seconds += time.perf_counter() - start
        start = time.perf_counter()
        with paused_gc():
            for body in bodies:
                orjson.loads(body)
        decode_seconds += time.perf_counter() - start
    return {"rows": plan.total_rows, "seconds": seconds, "decode_seconds": decode_seconds, "bytes": written}


def collect_join_io_floor(source: Path, scratch: Path) -> dict[str, Any]:
    """pyarrow reading the input table plus writing as many bytes as collect's results files
    and join's output hold: what collect + join must at least move."""
    return io_floor(source, scratch, int(os.environ["BENCH_OUTPUT_BYTES"]))


# -- the whole pipeline against the emulator ----------------------------------------------------
def pipeline_emulator(source: Path, scratch: Path) -> dict[str, Any]:
    """prepare -> upload -> batches -> results -> join against an emulator process with zero
    processing delay (the emulator is a separate process, as the real service would be)."""
    import socket

    from tasks import runner
    from tasks.infra.ledger import Ledger, default_ledger_url
    from tasks.providers.xai import XaiProvider
    from tasks.start import start_run

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    emulator = subprocess.Popen(
        [sys.executable, "-m", "flows.cli", "emulator", "--port", str(port), "--processing-s", "0",
         "--parse-delay-s", "0", "--api-key", "bench"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}/v1"
        provider = XaiProvider(url, api_key="bench", timeout_s=600)
        for _ in range(100):
            try:
                provider.find_batch("warm-up")
                break
            except Exception:
                time.sleep(0.1)
        ledger = Ledger(default_ledger_url(scratch))
        started = time.perf_counter()
        handle = start_run(TableSource(source), _job(), scratch / "runs", ledger, scratch / "out.parquet")
        while not runner.advance(ledger, provider, handle).complete:
            time.sleep(0.05)
        summary = runner.finish(ledger, handle, scratch / "out.parquet", overwrite=True)
        seconds = time.perf_counter() - started
        assert summary.by_status["succeeded"] == handle.plan.total_rows, summary.by_status
        return {"rows": handle.plan.total_rows, "seconds": seconds}
    finally:
        emulator.terminate()
        emulator.wait()


CASES: dict[str, Case] = {
    "prepare": prepare_grok_batch,
    "prepare-pandas-baseline": prepare_pandas_baseline,
    "prepare-io-floor": io_floor,
    "collect": collect_grok_batch,
    "collect-join-io-floor": collect_join_io_floor,
    "join": join_grok_batch,
    "join-pandas-baseline": join_pandas_baseline,
    "pipeline-emulator": pipeline_emulator,
}
