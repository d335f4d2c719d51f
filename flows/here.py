"""A run started by a person in this process (the command line, a notebook): a flow run on the
configured Prefect server, so it shows in its UI; with no server configured, the same stages
run directly, with no Prefect server to start (tasks.doors.drive is the one code path of both).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from tasks.doors.drive import WaitPolicy, check_command, resume_job, run_job, waiting_driver
from tasks.infra.prefect_config import prefect_server
from tasks.infra.table_io import TableSource
from tasks.infra.work_copies import url_for
from tasks.spec.job import JobSpec

OnProgress = Callable[[Any], None]


def run_here(
    source: TableSource,
    job: JobSpec,
    output: Path | None,
    overwrite: bool,
    data_root: Path,
    policy: WaitPolicy,
    on_progress: OnProgress,
) -> dict[str, Any]:
    """Run a table through the job in this process; {run_key, state: finished|pending, ...}."""
    if not prefect_server():
        driver = waiting_driver(policy, on_progress=on_progress)
        return run_job(source, job, output, overwrite, data_root, driver)
    check_command(source, job, output, overwrite, data_root)  # every refusal before Prefect is touched
    from flows.run_job import listening, local_wait, run_batch_job

    with local_wait(policy), listening(on_progress):
        return run_batch_job(
            input_path=source.recorded_as,  # a URL when on a store: another machine may run it
            job=job,
            output=url_for(output) if output else None,
            overwrite=overwrite,
            data_dir=url_for(data_root),
            encoding=source.encoding,
        )


def resume_here(
    data_root: Path,
    run_key: str,
    output: Path | None,
    overwrite: bool,
    policy: WaitPolicy,
    on_progress: OnProgress,
) -> dict[str, Any]:
    """Continue a run from the ledger in this process, as `run_here` runs one."""
    if not prefect_server():
        return resume_job(
            data_root, run_key, output, overwrite, waiting_driver(policy, on_progress=on_progress)
        )
    from flows.run_job import listening, resume_batch_job

    with listening(on_progress):
        return resume_batch_job(
            run_key=run_key,
            output=url_for(output) if output else None,
            overwrite=overwrite,
            wait=policy.wait,
            data_dir=url_for(data_root),
            poll_interval_s=policy.poll_interval_s,
            max_poll_interval_s=policy.max_poll_interval_s,
            max_wait_s=policy.max_wait_s,
        )
