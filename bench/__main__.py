"""`python -m bench` (make bench): grok-batch's local work against baselines in the same run.

Quick size by default; --rows N for another size; --full for 1M and 10M rows (memory growth).
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


def measure(rows: int, work: Path, with_pipeline: bool) -> dict[str, dict[str, Any]]:
    source = work / f"table-{rows}.parquet"
    if not source.exists():
        print(f"generating {rows:,} rows ...", flush=True)
        write_table(rows, source)
    out: dict[str, dict[str, Any]] = {}
    out["prepare"] = run_case("prepare", source, work)
    out["prepare-io-floor"] = run_case(
        "prepare-io-floor", source, work, {"BENCH_SHARD_BYTES": str(out["prepare"]["bytes"])}
    )
    if rows <= PANDAS_MAX_ROWS:
        out["prepare-pandas-baseline"] = run_case("prepare-pandas-baseline", source, work)
    out["collect"] = run_case("collect", source, work)
    out["join"] = run_case("join", source, work)
    if rows <= PANDAS_MAX_ROWS:
        out["join-pandas-baseline"] = run_case("join-pandas-baseline", source, work)
    if with_pipeline:
        out["pipeline-emulator"] = run_case("pipeline-emulator", source, work)
    return out


def report(rows: int, figures: dict[str, dict[str, Any]]) -> None:
    print(f"\n== {rows:,} rows ==")
    print(f"{'case':<26} {'rows':>11} {'seconds':>9} {'rows/s':>13} {'peak MB':>9}  ratio")
    prep = figures["prepare"]
    print(line("prepare", prep))
    floor = figures["prepare-io-floor"]
    print(
        line(
            "  io floor",
            floor,
            f"prepare takes {prep['seconds'] / floor['seconds']:.2f}x the floor (target <= 2)",
        )
    )
    if "prepare-pandas-baseline" in figures:
        base = figures["prepare-pandas-baseline"]
        speedup = base["seconds"] / prep["seconds"]
        print(line("  pandas + json.dumps", base, f"prepare is {speedup:.1f}x faster (target >= 20)"))
    print(line("collect", figures["collect"], "result pages -> results Parquet"))
    join = figures["join"]
    print(line("join", join))
    if "join-pandas-baseline" in figures:
        base = figures["join-pandas-baseline"]
        print(line("  pandas merge", base, f"join is {base['seconds'] / join['seconds']:.1f}x faster"))
    both = figures["collect"]["seconds"] + join["seconds"]
    rate = join["rows"] / both
    print(
        f"{'collect + join':<26} {join['rows']:>11,} {both:>9.2f} {rate:>13,.0f}  (target >= 500,000 rows/s)"
    )
    if "pipeline-emulator" in figures:
        pipe = figures["pipeline-emulator"]
        print(line("pipeline vs emulator", pipe, "whole run, zero processing delay (1M rows target <= 60 s)"))


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--rows", type=int, default=300_000, help="table size for the quick run")
    parser.add_argument("--full", action="store_true", help="1M and 10M rows, and memory growth between them")
    parser.add_argument("--no-pipeline", action="store_true", help="skip the run against the emulator")
    parser.add_argument("--work", type=Path, help="keep generated tables here (default: a temp folder)")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="grok-batch-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"grok-batch benchmarks on {os.cpu_count()} cores; tables in {work}")
    sizes = [1_000_000, 10_000_000] if args.full else [args.rows]
    results = {}
    for rows in sizes:
        results[rows] = measure(rows, work, with_pipeline=not args.no_pipeline and rows <= 1_000_000)
        report(rows, results[rows])
    if args.full:
        small, large = results[1_000_000], results[10_000_000]
        for case in ("prepare", "collect", "join"):
            growth = large[case]["peak_rss_mb"] / small[case]["peak_rss_mb"]
            print(
                f"peak memory {case}: {small[case]['peak_rss_mb']:,.0f} MB at 1M, "
                f"{large[case]['peak_rss_mb']:,.0f} MB at 10M = {growth:.2f}x (target <= 1.3x, <= 1,500 MB)"
            )
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
