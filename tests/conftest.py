"""Shared fixtures: an offline Prefect, a live emulator on a free loopback port, and
helpers that run the real pipeline stages against it."""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

# Before Prefect is imported anywhere: offline, isolated, quiet.
_PREFECT_HOME = tempfile.mkdtemp(prefix="grok-batch-test-prefect-")
os.environ.update(
    {
        "PREFECT_HOME": _PREFECT_HOME,
        "PREFECT_RESULTS_LOCAL_STORAGE_PATH": os.path.join(_PREFECT_HOME, "storage"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
        "PREFECT_LOGGING_LEVEL": "WARNING",
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
        "PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW": "ignore",
    }
)
os.environ.pop("PREFECT_API_URL", None)
os.environ.pop("XAI_API_KEY", None)
os.environ.pop("XAI_BASE_URL", None)
os.environ.pop("GROK_BATCH_LEDGER_URL", None)

import pytest  # noqa: E402

from emulator import EmulatorConfig, RunningEmulator  # noqa: E402
from tasks.infra import storage  # noqa: E402
from tests.helpers import EMULATOR_KEY  # noqa: E402
from tests.s3_server import RunningS3  # noqa: E402


@pytest.fixture(scope="session")
def prefect_harness() -> Iterator[None]:
    """One Prefect test server for the whole session (starting one costs ~10 s)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="session")
def prefect_api_url(prefect_harness: None) -> str:
    """The test Prefect server's URL, for CLI subprocesses."""
    from prefect.settings import PREFECT_API_URL

    return str(PREFECT_API_URL.value())


@pytest.fixture
def slow_emulator() -> Iterator[RunningEmulator]:
    """Batches that take ~1.5 s, so a subprocess can be killed while they run."""
    config = EmulatorConfig(api_key=EMULATOR_KEY, parse_delay_s=0.2, processing_s=1.5, retry_after_s=0.01)
    with RunningEmulator(config) as server:
        yield server


@pytest.fixture
def emulator(monkeypatch: pytest.MonkeyPatch) -> Iterator[RunningEmulator]:
    """A fast emulator on a free port; XAI_BASE_URL and XAI_API_KEY point at it."""
    config = EmulatorConfig(api_key=EMULATOR_KEY, parse_delay_s=0.05, processing_s=0.2, retry_after_s=0.01)
    with RunningEmulator(config) as server:
        monkeypatch.setenv("XAI_BASE_URL", server.url)
        monkeypatch.setenv("XAI_API_KEY", EMULATOR_KEY)
        yield server


@pytest.fixture
def openai_emulator(emulator: RunningEmulator, monkeypatch: pytest.MonkeyPatch) -> RunningEmulator:
    """The same emulator, with OPENAI_BASE_URL and OPENAI_API_KEY pointing at its OpenAI protocol."""
    monkeypatch.setenv("OPENAI_BASE_URL", emulator.openai_url)
    monkeypatch.setenv("OPENAI_API_KEY", EMULATOR_KEY)
    return emulator


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    path = tmp_path / "data"
    path.mkdir()
    return path


@pytest.fixture(scope="session")
def s3_server() -> Iterator[RunningS3]:
    """One SeaweedFS S3 server for the session: `.bucket` exists, `.env(identity)` points a
    client at it as `.admin` (read and write) or `.reader` (read only)."""
    with RunningS3() as server:
        yield server


@pytest.fixture
def s3_env(s3_server: RunningS3, monkeypatch: pytest.MonkeyPatch) -> str:
    """The AWS variables point at the test server as its admin; yields this test's own prefix
    (s3://BUCKET/<uuid>) so tests never see each other's objects."""
    for name in ("AWS_ENDPOINT_URL_S3", "AWS_SESSION_TOKEN", "AWS_PROFILE", storage.STORAGE_BLOCK_ENV):
        monkeypatch.delenv(name, raising=False)
    for name, value in s3_server.env().items():
        monkeypatch.setenv(name, value)
    return s3_server.url(uuid.uuid4().hex)
