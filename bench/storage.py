"""`python -m bench.storage`: the same whole run with its table on local disk and on a bucket.

Issue 14's memory figure: a Parquet input read from the bucket keeps peak RSS within 1.3x of
the same run from local disk. A SeaweedFS S3 server on loopback (tests/s3_server.py, the one the
storage tests use) holds the table; one `grok-batch run` (in-process stages, no Prefect server)
against an emulator that answers at once then runs twice, each a fresh process with its own
working cache (GROK_BATCH_WORK_DIR):
- local: input, output (-o) and --data-dir on this disk;
- bucket: input s3://…/table.parquet, output s3://…/out.parquet, --data-dir s3://…/grok.
Both get the same environment (the AWS variables too); only the paths differ. Figures: peak RSS
of the run's largest process, the ratio bucket / local (target <= 1.3x), wall time and the run's
own HTTP time (first to last call the service saw), for information.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pyarrow.fs as pafs
import pyarrow.parquet as pq

from bench.generate import write_table
from bench.start_up import Timing, _timed
from emulator import EmulatorConfig, RunningEmulator
from tests.s3_server import REGION, RunningS3

KEY = "bench-key"
PROMPT = "Classify the sentiment of this review: {{ text }}"
TARGET_RATIO = 1.3


@dataclass(frozen=True)
class Place:
    """Where one run reads its table and writes its output and run data."""

    name: str
    table: str
    output: str
    data_dir: str


def _command(place: Place) -> list[str]:
    return [
        sys.executable, "-m", "flows.cli", "run", place.table, "--model", "grok-4.3", "--prompt", PROMPT,
        "-p", "max_tokens=16", "-o", place.output, "--data-dir", place.data_dir, "--overwrite",
        "--poll-interval", "0.05",
    ]  # fmt: skip


def _bucket_fs(s3: RunningS3) -> pafs.S3FileSystem:
    return pafs.S3FileSystem(
        access_key=s3.admin.access_key,
        secret_key=s3.admin.secret_key,
        endpoint_override=s3.endpoint,
        region=REGION,
    )


def _rows_at(url: str, fs: pafs.FileSystem) -> int:
    return int(pq.ParquetFile(url.removeprefix("s3://"), filesystem=fs).metadata.num_rows)


def run_bucket_vs_local(rows: int, work: Path) -> dict[str, Timing]:
    """Measure and print both runs over a `rows`-row table kept in `work`; returns their timings."""
    table = work / f"table-{rows}.parquet"
    if not table.exists():
        print(f"generating {rows:,} rows ...", flush=True)
        write_table(rows, table)
    scratch = Path(tempfile.mkdtemp(prefix="grok-batch-bench-storage-", dir=work))
    base_env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("XAI_", "OPENAI_", "PREFECT_", "GROK_BATCH_", "AWS_"))
    }
    base_env.update(PREFECT_HOME=str(scratch / "prefect-home"), DO_NOT_TRACK="1")
    base_env["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    config = EmulatorConfig(api_key=KEY, parse_delay_s=0.0, processing_s=0.0)
    timings: dict[str, Timing] = {}
    try:
        with RunningS3(bucket="grok-batch-bench") as s3, RunningEmulator(config) as service:
            fs = _bucket_fs(s3)
            remote_table = s3.url("bench", f"table-{rows}.parquet")
            pafs.copy_files(str(table), remote_table.removeprefix("s3://"), destination_filesystem=fs)
            places = [
                Place("local", str(table), str(scratch / "out.parquet"), str(scratch / "data")),
                Place("bucket", remote_table, s3.url("bench", "out.parquet"), s3.url("bench", "grok")),
            ]
            for place in places:
                env = {
                    **base_env,
                    **s3.env(),
                    "XAI_BASE_URL": service.url,
                    "XAI_API_KEY": KEY,
                    "GROK_BATCH_WORK_DIR": str(scratch / f"work-{place.name}"),
                }
                print(f"running {rows:,} rows, {place.name} ...", flush=True)
                timings[place.name] = _timed(_command(place), env, service)
            written = {
                "local": _rows_at(places[0].output, pafs.LocalFileSystem()),
                "bucket": _rows_at(places[1].output, fs),
            }
            if written != {"local": rows, "bucket": rows}:
                raise SystemExit(f"outputs hold {written} rows, not {rows:,} each")
            run_files = fs.get_file_info(
                pafs.FileSelector(places[1].data_dir.removeprefix("s3://"), recursive=True)
            )
            if not any(info.type == pafs.FileType.File for info in run_files):
                raise SystemExit(f"the bucket run left nothing under {places[1].data_dir}")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    report(rows, timings)
    return timings


def report(rows: int, timings: dict[str, Timing]) -> None:
    local, bucket = timings["local"], timings["bucket"]
    print(f"\nthe same `grok-batch run` of {rows:,} Parquet rows, local disk vs an S3 bucket (SeaweedFS)")
    print(f"{'case':<28} {'wall s':>8} {'http s':>8} {'peak MB':>8}  note")
    for name, t, note in (
        ("local disk", local, "input, -o and --data-dir on this disk"),
        ("bucket", bucket, "s3:// input, -o and --data-dir"),
    ):
        http = f"{t.http_s:.2f}" if t.http_s is not None else "-"
        print(f"{name:<28} {t.wall_s:>8.2f} {http:>8} {t.peak_rss_mb:>8.0f}  {note}")
    ratio = bucket.peak_rss_mb / local.peak_rss_mb
    mark = "ok" if ratio <= TARGET_RATIO else "ABOVE TARGET"
    print(
        f"peak RSS bucket / local: {ratio:.2f}x (target <= {TARGET_RATIO}x: {mark}); "
        f"wall time bucket / local: {bucket.wall_s / local.wall_s:.2f}x"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=2_000_000, help="rows of the table (issue 14: 2M)")
    parser.add_argument("--work", type=Path, help="keep the generated table here (default: a temp folder)")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="grok-batch-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        run_bucket_vs_local(args.rows, work)
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
