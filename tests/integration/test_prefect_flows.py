"""run-batch-job through real Prefect (session harness) against the emulator over HTTP."""

from pathlib import Path

import pyarrow.parquet as pq
import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey, FlowRunFilter, FlowRunFilterId
from prefect.client.schemas.sorting import FlowRunSort

from emulator import RunningEmulator
from flows.run_job import local_wait, resume_batch_job, run_batch_job
from tasks.doors.drive import WaitPolicy
from tasks.spec.job import build_job
from tests.helpers import assert_answers_on_their_rows, write_csv

pytestmark = pytest.mark.usefixtures("prefect_harness")


async def _latest_flow_run_and_artifacts(run_key: str) -> tuple[object, list]:
    async with get_client() as client:
        runs = await client.read_flow_runs(sort=FlowRunSort.START_TIME_DESC, limit=1)
        artifacts = await client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(like_=run_key)),
        )
        progress = await client.read_artifacts(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[runs[0].id])),
        )
        return runs[0], artifacts + progress


def test_flow_runs_a_table_and_publishes_artifacts(
    tmp_path: Path, emulator: RunningEmulator, data_dir: Path
) -> None:
    import asyncio

    src = write_csv(tmp_path / "reviews.csv", [{"text": f"great thing {i}"} for i in range(30)])
    out = tmp_path / "out.parquet"
    job = build_job(None, {"name": "flowtest", "model": "grok-4.3", "prompt": "{{ text }}"})
    with local_wait(WaitPolicy(poll_interval_s=0.1)):
        result = run_batch_job(input_path=str(src), job=job, output=str(out), data_dir=str(data_dir))
    assert result["state"] == "finished"
    summary = result["summary"]
    assert summary["by_status"]["succeeded"] == 30
    assert pq.read_table(out).num_rows == 30
    assert_answers_on_their_rows(out, data_dir / "runs" / summary["run_key"])
    flow_run, artifacts = asyncio.run(_latest_flow_run_and_artifacts(summary["run_key"]))
    assert flow_run.name == "flowtest · reviews.csv"
    types = {a.type for a in artifacts}
    assert {"table", "markdown", "progress"} <= types
    progress = next(a for a in artifacts if a.type == "progress")
    assert progress.data == 100.0


def test_no_wait_submits_and_resume_finishes(
    tmp_path: Path, emulator: RunningEmulator, data_dir: Path
) -> None:
    emulator.config.processing_s = 1.0
    src = write_csv(tmp_path / "in.csv", [{"text": f"t{i}"} for i in range(10)])
    out = tmp_path / "out.parquet"
    job = build_job(None, {"model": "grok-4.3", "prompt": "{{ text }}"})
    with local_wait(WaitPolicy(wait=False)):
        first = run_batch_job(input_path=str(src), job=job, output=str(out), data_dir=str(data_dir))
    assert first["state"] == "pending" and not out.exists()
    assert emulator.state.count("POST", "/v1/batches", 200) == 1
    second = resume_batch_job(run_key=first["run_key"][:6], data_dir=str(data_dir), poll_interval_s=0.1)
    assert second["state"] == "finished" and pq.read_table(out).num_rows == 10
    assert emulator.state.count("POST", "/v1/batches", 200) == 1  # re-attached, not resubmitted


def test_key_from_a_prefect_secret_block_when_the_environment_has_none(
    tmp_path: Path, emulator: RunningEmulator, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from prefect.blocks.system import Secret

    from tests.helpers import EMULATOR_KEY

    monkeypatch.delenv("XAI_API_KEY")
    Secret(value=EMULATOR_KEY).save("xai-api-key", overwrite=True)
    try:
        src = write_csv(tmp_path / "in.csv", [{"text": "x"}])
        job = build_job(None, {"model": "grok-4.3", "prompt": "{{ text }}"})
        result = run_batch_job(
            input_path=str(src), job=job, output=str(tmp_path / "o.parquet"), data_dir=str(data_dir)
        )
        assert result["state"] == "finished"
    finally:
        Secret.delete("xai-api-key")
    with pytest.raises(Exception, match=r"no API key: set the environment variable XAI_API_KEY"):
        run_batch_job(
            input_path=str(src), job=job, output=str(tmp_path / "o2.parquet"), data_dir=str(data_dir)
        )
