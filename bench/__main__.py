"""`python -m bench` (make bench): grok-batch's local work against baselines in the same run.

Quick size by default (collect + join at 1M rows, where their target is judged); --rows N for
another size; --full for 1M and 10M rows (memory growth) and the bucket run at 2M; --cases to
run only some cases.
Each case runs in a fresh process so its peak RSS is its own.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.generate import write_table

PANDAS_MAX_ROWS = 2_000_000  # the pandas baselines take minutes and many GB beyond this
PREPARE_CASES = ("prepare", "prepare-io-floor", "prepare-pandas-baseline", "pipeline-emulator")
THROUGHPUT_CASES = ("collect", "join", "join-pandas-baseline", "collect-join-io-floor")
START_UP_CASES = ("start-up",)  # bench.start_up: --help, 2-row and 120k-row runs, time to first call
STORAGE_CASES = ("bucket-vs-local",)  # bench.storage: one whole run from local disk and from an S3 bucket
STORAGE_FULL_ROWS = 2_000_000  # where issue 14 judges its memory ratio
ALL_CASES = PREPARE_CASES + THROUGHPUT_CASES + START_UP_CASES + STORAGE_CASES


def run_case(
    name: str, source: Path, scratch_root: Path, env: dict[str, str] | None = None
) -> dict[str, Any]:
    scratch = scratch_root / f"{name}-{time.monotonic_ns()}"
    done = subprocess.run(
        [sys.executable, "-m", "bench.run_case", name, str(source), str(scratch)],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        check=False,
    )
    shutil.rmtree(scratch, ignore_errors=True)
    if done.returncode != 0:
        raise SystemExit(f"benchmark {name} failed:\n{done.stderr[-3000:]}")
    figures: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    figures["rows_per_s"] = figures["rows"] / figures["seconds"]
    return figures


def line(name: str, f: dict[str, Any], note: str = "") -> str:
    return (
        f"{name:<26} {f['rows']:>11,} {f['seconds']:>9.2f} {f['rows_per_s']:>13,.0f} "
        f"{f['peak_rss_mb']:>9,.0f}  {note}"
    )


def table(rows: int, work: Path) -> Path:
    source = work / f"table-{rows}.parquet"
    if not source.exists():
        print(f"generating {rows:,} rows ...", flush=True)
        write_table(rows, source)
    return source


def measure(rows: int, work: Path, cases: set[str]) -> dict[str, dict[str, Any]]:
    """The prepare cases (and the pipeline) at `rows`."""
    out: dict[str, dict[str, Any]] = {}
    if not cases & set(PREPARE_CASES):
        return out
    source = table(rows, work)
    if "prepare" in cases:
        out["prepare"] = run_case("prepare", source, work)
    if "prepare-io-floor" in cases and "prepare" in out:
        out["prepare-io-floor"] = run_case(
            "prepare-io-floor", source, work, {"BENCH_SHARD_BYTES": str(out["prepare"]["bytes"])}
        )
    if "prepare-pandas-baseline" in cases and rows <= PANDAS_MAX_ROWS:
        out["prepare-pandas-baseline"] = run_case("prepare-pandas-baseline", source, work)
    if "pipeline-emulator" in cases and rows <= 1_000_000:
        out["pipeline-emulator"] = run_case("pipeline-emulator", source, work)
    return out


def measure_throughput(rows: int, work: Path, cases: set[str]) -> dict[str, dict[str, Any]]:
    """collect, join, their pandas baseline and the I/O floor of the two at `rows`."""
    out: dict[str, dict[str, Any]] = {}
    if not cases & set(THROUGHPUT_CASES):
        return out
    source = table(rows, work)
    for name in ("collect", "join"):
        if name in cases:
            out[name] = run_case(name, source, work)
    if "join-pandas-baseline" in cases and rows <= PANDAS_MAX_ROWS:
        out["join-pandas-baseline"] = run_case("join-pandas-baseline", source, work)
    if "collect-join-io-floor" in cases and "collect" in out and "join" in out:
        written = out["collect"]["bytes"] + out["join"]["bytes"]
        out["collect-join-io-floor"] = run_case(
            "collect-join-io-floor", source, work, {"BENCH_OUTPUT_BYTES": str(written)}
        )
    return out


def report(rows: int, figures: dict[str, dict[str, Any]]) -> None:
    if not figures:
        return
    print(f"\n== {rows:,} rows ==")
    print(f"{'case':<26} {'rows':>11} {'seconds':>9} {'rows/s':>13} {'peak MB':>9}  ratio")
    prep = figures.get("prepare")
    if prep is not None:
        print(line("prepare", prep))
    if prep is not None and "prepare-io-floor" in figures:
        floor = figures["prepare-io-floor"]
        ratio = prep["seconds"] / floor["seconds"]
        print(line("  io floor", floor, f"prepare takes {ratio:.2f}x the floor (target <= 2)"))
    if prep is not None and "prepare-pandas-baseline" in figures:
        base = figures["prepare-pandas-baseline"]
        speedup = base["seconds"] / prep["seconds"]
        print(line("  pandas + json.dumps", base, f"prepare is {speedup:.1f}x faster (target >= 20)"))
    collect, join = figures.get("collect"), figures.get("join")
    if collect is not None:
        decode = collect["decode_seconds"]
        print(line("collect", collect, f"result page bodies -> results Parquet; orjson alone {decode:.2f} s"))
    if join is not None:
        print(line("join", join))
    if join is not None and "join-pandas-baseline" in figures:
        base = figures["join-pandas-baseline"]
        print(line("  pandas merge", base, f"join is {base['seconds'] / join['seconds']:.1f}x faster"))
    if collect is not None and join is not None:
        both = collect["seconds"] + join["seconds"]
        rate = join["rows"] / both
        print(
            f"{'collect + join':<26} {join['rows']:>11,} {both:>9.2f} {rate:>13,.0f}  (target >= 500k rows/s)"
        )
    if collect is not None and join is not None and "collect-join-io-floor" in figures:
        floor = figures["collect-join-io-floor"]
        ratio = (collect["seconds"] + join["seconds"]) / floor["seconds"]
        print(
            line(
                "  io floor", floor, f"collect + join take {ratio:.2f}x the floor (read input, write outputs)"
            )
        )
    if "pipeline-emulator" in figures:
        pipe = figures["pipeline-emulator"]
        print(line("pipeline vs emulator", pipe, "whole run, zero processing delay (1M rows target <= 60 s)"))


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--rows", type=int, default=300_000, help="table size for the quick run")
    parser.add_argument(
        "--full",
        action="store_true",
        help="1M and 10M rows, and memory growth between them; the bucket run at 2M rows",
    )
    parser.add_argument("--no-pipeline", action="store_true", help="skip the run against the emulator")
    parser.add_argument(
        "--throughput-rows",
        type=int,
        default=1_000_000,
        help="table size for collect and join in the quick run (their target is judged at 1M)",
    )
    parser.add_argument(
        "--cases",
        type=lambda text: set(text.split(",")),
        default=set(ALL_CASES),
        help="comma-separated cases to run (default: all): " + ",".join(ALL_CASES),
    )
    parser.add_argument("--work", type=Path, help="keep generated tables here (default: a temp folder)")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="grok-batch-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"grok-batch benchmarks on {os.cpu_count()} cores; tables in {work}")
    cases = args.cases - ({"pipeline-emulator"} if args.no_pipeline else set())
    unknown = cases - set(ALL_CASES)
    if unknown:
        parser.error(f"unknown case(s): {', '.join(sorted(unknown))}")
    results: dict[int, dict[str, dict[str, Any]]] = {}
    if args.full:
        for rows in (1_000_000, 10_000_000):
            results[rows] = {**measure(rows, work, cases), **measure_throughput(rows, work, cases)}
            report(rows, results[rows])
    else:
        sizes = {args.rows: measure(args.rows, work, cases)}
        throughput = measure_throughput(args.throughput_rows, work, cases)
        sizes[args.throughput_rows] = {**sizes.get(args.throughput_rows, {}), **throughput}
        for rows, figures in sizes.items():
            report(rows, figures)
    if args.full:
        small, large = results[1_000_000], results[10_000_000]
        for case in ("prepare", "collect", "join"):
            if case not in small or case not in large:
                continue
            growth = large[case]["peak_rss_mb"] / small[case]["peak_rss_mb"]
            print(
                f"peak memory {case}: {small[case]['peak_rss_mb']:,.0f} MB at 1M, "
                f"{large[case]['peak_rss_mb']:,.0f} MB at 10M = {growth:.2f}x (target <= 1.3x, <= 1,500 MB)"
            )
    if "bucket-vs-local" in cases:  # a whole run from local disk and from an S3 bucket (bench.storage)
        from bench.storage import run_bucket_vs_local

        run_bucket_vs_local(STORAGE_FULL_ROWS if args.full else args.rows, work)
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)

    if "start-up" in cases:  # whole command-line runs against an instant emulator (bench.start_up)
        from bench.start_up import run_start_up

        run_start_up()


if __name__ == "__main__":
    main()
