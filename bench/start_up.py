"""`python -m bench.start_up`: how long a command-line run takes before and around the service.

Whole-process figures, median of N runs, every process of a run counted (its peak RSS and the
Prefect server it starts or talks to), against an emulator that answers at once:
- `--help`, beside a bare `python -c "import pyarrow, openai"` (the floor any run pays);
- a 2-row run and a 120k-row run: launch to the first service call, and wall time, beside
  the run's own HTTP time (first to last service call) — the part the service decides;
- three ways to relate a run to Prefect (issue 13's options): in-process stages with no server
  (the default without PREFECT_API_URL), a flow on Prefect's temporary server started for the
  run, and a flow on a server started once and reused (PREFECT_API_URL set).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from bench.generate import write_table
from emulator import EmulatorConfig, RunningEmulator

KEY = "bench-key"
PROMPT = "Classify: {{ text }}"
# The flow on Prefect's temporary server: what `grok-batch run` did before it ran stages in-process.
AS_FLOW = """
import sys
from pathlib import Path
from flows.run_job import local_wait, run_batch_job
from tasks.doors.drive import WaitPolicy
from tasks.spec.job import build_job
job = build_job(None, {"model": "grok-4.3", "prompt": sys.argv[2]})
with local_wait(WaitPolicy(poll_interval_s=0.1)):
    run_batch_job(input_path=sys.argv[1], job=job, output=sys.argv[3], data_dir=sys.argv[4])
"""


@dataclass(frozen=True)
class Timing:
    wall_s: float
    first_call_s: float | None  # launch -> first request the service saw
    http_s: float | None  # first -> last request the service saw
    peak_rss_mb: float  # the largest process of the run (children of this one)


# Runs the command as its child and reports the child's wall time and peak RSS (with its own
# children): a process forked from this bench would inherit the bench's RSS as its peak.
LAUNCHER = """
import resource, subprocess, sys, time
started = time.time()
code = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL).returncode
print(started, time.time() - started, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, code)
"""


def _timed(command: list[str], env: dict[str, str], service: RunningEmulator | None) -> Timing:
    seen = len(service.state.request_log) if service else 0
    done = subprocess.run(
        [sys.executable, "-c", LAUNCHER, *command], env=env, capture_output=True, text=True, check=False
    )
    started, wall, rss_kb, code = done.stdout.split()
    if int(code) != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    log = service.state.request_log[seen:] if service else []
    first = log[0].time - float(started) if log else None
    http = log[-1].time - log[0].time if log else None
    return Timing(float(wall), first, http, int(rss_kb) / 1024)


def _median(timings: list[Timing]) -> Timing:
    def med(values: list[float | None]) -> float | None:
        known = [v for v in values if v is not None]
        return statistics.median(known) if known else None

    return Timing(
        statistics.median(t.wall_s for t in timings),
        med([t.first_call_s for t in timings]),
        med([t.http_s for t in timings]),
        max(t.peak_rss_mb for t in timings),
    )


@contextmanager
def _prefect_server(home: Path) -> Iterator[str]:
    """A `prefect server start` on loopback, for the option of a server started once."""
    port = _free_port()
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    env.pop("PREFECT_API_URL", None)
    server = subprocess.Popen(
        [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}/api"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        else:
            raise SystemExit("prefect server did not start")
        yield url
    finally:
        server.terminate()
        server.wait(timeout=30)


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeat", type=int, default=5, help="runs per figure (median)")
    parser.add_argument("--rows", type=int, default=120_000, help="rows of the large run")
    args = parser.parse_args()
    run_start_up(args.repeat, args.rows)


def run_start_up(repeats: int = 5, large_rows: int = 120_000) -> None:
    """Measure and print every figure of this module (see its docstring)."""
    work = Path(tempfile.mkdtemp(prefix="grok-batch-startup-"))
    base_env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("XAI_", "OPENAI_", "PREFECT_", "GROK_BATCH_"))
    }
    base_env.update(PREFECT_HOME=str(work / "prefect-home"), DO_NOT_TRACK="1")
    base_env["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    small = work / "two.csv"
    small.write_text("text\nI love it\nbroken\n", encoding="utf-8")
    large = work / f"table-{large_rows}.parquet"
    write_table(large_rows, large)
    cli = [sys.executable, "-m", "flows.cli"]
    config = EmulatorConfig(api_key=KEY, parse_delay_s=0.0, processing_s=0.0)
    rows: list[tuple[str, Timing, str]] = []
    with RunningEmulator(config) as service:
        env = {**base_env, "XAI_BASE_URL": service.url, "XAI_API_KEY": KEY}

        def repeat(name: str, make: list[str] | None, note: str = "", env_: dict[str, str] = env) -> Timing:
            timings = []
            for i in range(repeats):
                # Each run its own data folder: a run key seen before would re-attach, not run.
                case = work / "runs" / f"{name.replace(' ', '-').replace(',', '')}-{i}"
                command = [
                    part.replace("{out}", str(case / "out.parquet")).replace("{data}", str(case / "data"))
                    for part in (make or [])
                ]
                timings.append(_timed(command, {**env_, "GROK_BATCH_DATA_DIR": str(case / "data")}, service))
            median = _median(timings)
            rows.append((name, median, note))
            return median

        floor = repeat("import pyarrow, openai", [sys.executable, "-c", "import pyarrow, openai"], "baseline")
        repeat("grok-batch --help", [*cli, "--help"], "")
        run = ["run", "--model", "grok-4.3", "--prompt", PROMPT, "-o", "{out}", "--poll-interval", "0.05"]
        repeat("2 rows, no server", [*cli, run[0], str(small), *run[1:]], "in-process stages (default)")
        repeat(
            "2 rows, temporary server",
            [sys.executable, "-c", AS_FLOW, str(small), PROMPT, "{out}", "{data}"],
            "a flow on Prefect's temporary server (before)",
        )
        with _prefect_server(work / "server-home") as api_url:
            served = {**env, "PREFECT_API_URL": api_url}
            repeat(
                "2 rows, running server", [*cli, run[0], str(small), *run[1:]], "PREFECT_API_URL set", served
            )
        large_run = repeat(
            f"{large_rows:,} rows, no server", [*cli, run[0], str(large), *run[1:]], "in-process stages"
        )
    print(f"\nstart-up and whole runs against an instant emulator (median of {repeats}; every process)")
    print(f"{'case':<28} {'wall s':>8} {'x floor':>8} {'1st call s':>11} {'http s':>8} {'peak MB':>8}  note")
    for name, t, note in rows:
        first = f"{t.first_call_s:.2f}" if t.first_call_s is not None else "-"
        http = f"{t.http_s:.2f}" if t.http_s is not None else "-"
        ratio = t.wall_s / floor.wall_s
        print(
            f"{name:<28} {t.wall_s:>8.2f} {ratio:>8.1f} {first:>11} {http:>8} {t.peak_rss_mb:>8.0f}  {note}"
        )
    if large_run.http_s is not None:
        print(
            f"\n{large_rows:,} rows: wall {large_run.wall_s:.2f} s = the run's own HTTP time "
            f"{large_run.http_s:.2f} s + {large_run.wall_s - large_run.http_s:.2f} s of ours "
            "(target: + 3 s, and 15 s in all)"
        )


if __name__ == "__main__":
    main()
