"""`emulator`, `demo` and `serve`: the local emulator, the offline demo, and Prefect deployments."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from flows.cli.options import DATA_DIR, DataDir
from flows.cli.render import ProgressListener, console, fail, run_with_progress, show_preview, show_result
from tasks.infra.errors import GrokBatchError
from tasks.infra.work_copies import local_for, url_for

if TYPE_CHECKING:
    from emulator import RunningEmulator


def serve(
    inbox: Annotated[
        Path | None, typer.Option(parser=local_for, help="Inbox folder or URL (default DATA_DIR/inbox).")
    ] = None,
    scan_interval: Annotated[float, typer.Option(help="Seconds between inbox scans.")] = 60.0,
    collect_interval: Annotated[
        float, typer.Option(help="Backstop seconds between collector passes (waiting runs book their own).")
    ] = 600.0,
    settle: Annotated[float, typer.Option(help="A dropped file must be unchanged this long.")] = 10.0,
    data_dir: DataDir = DATA_DIR,
) -> None:
    """Serve the run-job, scan-inbox and collect-pending deployments from this process.

    Needs a Prefect server (PREFECT_API_URL); runs appear in its UI.

    Example:

      prefect server start &   export PREFECT_API_URL=http://127.0.0.1:4200/api

      grok-batch serve --scan-interval 30   # then drop reviews.csv into data/inbox/
    """
    from flows.serve import serve_all

    serve_all(
        data_dir=url_for(data_dir),  # what every machine serving these deployments can resolve
        inbox_dir=url_for(inbox) if inbox else None,
        scan_interval_s=scan_interval,
        collect_interval_s=collect_interval,
        settle_s=settle,
    )


def emulator(
    host: Annotated[str, typer.Option(help="Loopback address to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port (0 picks a free one).")] = 8000,
    api_key: Annotated[str, typer.Option(help="Bearer token the emulator accepts.")] = "emulator-key",
    processing_s: Annotated[float, typer.Option(help="Seconds for a batch's requests to finish.")] = 5.0,
    parse_delay_s: Annotated[float, typer.Option(help="Seconds a new batch shows zero counters.")] = 1.0,
    fail_rate: Annotated[float, typer.Option(help="Fraction of requests that fail.")] = 0.0,
    rate_429: Annotated[float, typer.Option("--rate-429", help="Fraction of calls answered 429.")] = 0.0,
    rate_500: Annotated[float, typer.Option("--rate-500", help="Fraction of calls answered 500.")] = 0.0,
    drop_rate: Annotated[float, typer.Option(help="Fraction of connections dropped.")] = 0.0,
    expire_after_s: Annotated[float, typer.Option(help="Seconds until a batch expires.")] = 86_400.0,
    protocol: Annotated[
        str,
        typer.Option(help="What /v1 speaks: xai, or openai (OpenAI's Batch API is always at /openai/v1)."),
    ] = "xai",
) -> None:
    """Serve a local emulator of xAI's Batch API, and of OpenAI's at /openai/v1
    (no key, no network needed).

    Example:

      grok-batch emulator --port 8000 &

      export XAI_BASE_URL=http://127.0.0.1:8000/v1 XAI_API_KEY=emulator-key

      grok-batch run data/samples/reviews.csv --job data/samples/reviews.job.yaml

      export OPENAI_BASE_URL=http://127.0.0.1:8000/openai/v1 OPENAI_API_KEY=emulator-key

      grok-batch run data/samples/reviews.csv --job data/samples/reviews.job.yaml --provider openai
    """
    from emulator import EmulatorConfig, RunningEmulator
    from emulator.config import PROTOCOLS

    if protocol not in PROTOCOLS:
        fail(GrokBatchError(f"--protocol must be one of {', '.join(PROTOCOLS)}, not {protocol!r}"))
    config = EmulatorConfig(
        api_key=api_key,
        processing_s=processing_s,
        parse_delay_s=parse_delay_s,
        fail_rate=fail_rate,
        rate_429=rate_429,
        rate_500=rate_500,
        drop_rate=drop_rate,
        expire_after_s=expire_after_s,
        protocol=protocol,
    )
    server = RunningEmulator(config, host=host, port=port).start()
    console.print(
        f"batch emulator: {protocol} protocol on {server.url}, OpenAI protocol on {server.openai_url}  "
        f"(API key {api_key}; Ctrl-C stops)"
    )
    _serve_until_interrupted(server)


def _serve_until_interrupted(server: RunningEmulator) -> None:
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.stop()


def demo(
    samples: Annotated[Path, typer.Option(help="Folder with reviews.csv and reviews.job.yaml.")] = Path(
        "data/samples"
    ),
    output: Annotated[Path, typer.Option("--output", "-o", help="Where the demo writes its result.")] = Path(
        "data/outbox/reviews.parquet"
    ),
) -> None:
    """Run the sample job end to end against the local emulator and show the result.

    Example:  grok-batch demo   (this is what `make demo` runs)
    """
    from emulator import EmulatorConfig, RunningEmulator

    scratch = Path(tempfile.mkdtemp(prefix="grok-batch-demo-"))
    with RunningEmulator(
        EmulatorConfig(api_key="emulator-key", parse_delay_s=0.5, processing_s=3.0)
    ) as server:
        os.environ["XAI_BASE_URL"] = server.url
        os.environ["XAI_API_KEY"] = "emulator-key"
        console.print(
            f"[bold yellow]Demo:[/] answers come from the LOCAL EMULATOR at {server.url}, not from Grok. "
            "Set XAI_API_KEY and use `grok-batch run` for real answers."
        )
        try:
            result = _run_sample_job(samples, output, scratch)
        except GrokBatchError as exc:
            fail(exc)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    show_result(result, scratch)
    show_preview(output)
    console.print("[bold yellow]These answers came from the local emulator.[/]")


def _run_sample_job(samples: Path, output: Path, scratch: Path) -> dict[str, Any]:
    from flows.run_job import listening, local_wait, run_batch_job
    from tasks.doors.drive import WaitPolicy
    from tasks.spec.job import build_job

    spec = build_job(samples / "reviews.job.yaml")

    def call(on_progress: ProgressListener) -> dict[str, Any]:
        policy = WaitPolicy(poll_interval_s=0.5, max_poll_interval_s=2.0, max_wait_s=300)
        with local_wait(policy), listening(on_progress):
            return run_batch_job(
                input_path=str(samples / "reviews.csv"),
                job=spec,
                output=str(output),
                overwrite=True,
                data_dir=str(scratch),
            )

    return run_with_progress(call)
