"""The analyst inbox through the real flows: drop, claim, submit, collect, archive."""

import os
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from emulator import RunningEmulator
from flows.collect import collect_pending
from flows.scan_inbox import scan_inbox
from tasks.infra.errors import PassFailedError
from tests.helpers import EMULATOR_KEY, write_csv

pytestmark = pytest.mark.usefixtures("prefect_harness")
JOB_YAML = "model: grok-4.3\nprompt: 'Classify: {{ text }}'\n"


def drop(inbox: Path, name: str, rows: list[dict], job: str | None = JOB_YAML, age_s: float = 60) -> Path:
    inbox.mkdir(parents=True, exist_ok=True)
    path = write_csv(inbox / name, rows)
    if job is not None:
        (inbox / (Path(name).stem + ".job.yaml")).write_text(job)
    os.utime(path, (time.time() - age_s, time.time() - age_s))
    return path


def collect_until_idle(data: Path, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while collect_pending(data_dir=str(data))["advanced"]:
        assert time.monotonic() < deadline, "runs did not finish"
        time.sleep(0.2)


def test_dropped_file_ends_in_the_outbox_and_the_input_in_archive(
    tmp_path: Path, emulator: RunningEmulator
) -> None:
    data = tmp_path / "data"
    drop(data / "inbox", "reviews.csv", [{"text": f"great {i}"} for i in range(12)])
    assert scan_inbox(data_dir=str(data), settle_s=5)["submitted"] == ["reviews.csv"]
    assert list((data / "inbox").iterdir()) == []
    collect_until_idle(data)
    assert pq.read_table(data / "outbox" / "reviews.parquet").num_rows == 12
    assert "succeeded | 12" in (data / "outbox" / "reviews.report.md").read_text()
    archived = sorted(p.name for p in (data / "archive").iterdir())
    assert len(archived) == 2 and archived[0].startswith("reviews--") and archived[1].endswith(".job.yaml")
    assert list((data / "processing").iterdir()) == []


def test_file_still_being_written_is_left_alone(tmp_path: Path, emulator: RunningEmulator) -> None:
    data = tmp_path / "data"
    path = drop(data / "inbox", "fresh.csv", [{"text": "x"}], age_s=0)
    assert scan_inbox(data_dir=str(data), settle_s=30)["submitted"] == []
    assert path.exists() and emulator.state.request_log == []
    os.utime(path, (time.time() - 60, time.time() - 60))
    assert scan_inbox(data_dir=str(data), settle_s=30)["submitted"] == ["fresh.csv"]


def test_same_content_twice_is_processed_once_and_same_name_never_clobbers(
    tmp_path: Path, emulator: RunningEmulator
) -> None:
    data = tmp_path / "data"
    rows = [{"text": "same"}]
    drop(data / "inbox", "a.csv", rows)
    scan_inbox(data_dir=str(data), settle_s=1)
    collect_until_idle(data)
    drop(data / "inbox", "a.csv", rows)
    assert scan_inbox(data_dir=str(data), settle_s=1)["duplicates"] == ["a.csv"]
    assert emulator.state.count("POST", "/v1/batches", 200) == 1
    drop(data / "inbox", "a.csv", [{"text": "different"}])
    assert scan_inbox(data_dir=str(data), settle_s=1)["submitted"] == ["a.csv"]
    collect_until_idle(data)
    outputs = sorted(p.name for p in (data / "outbox").glob("*.parquet"))
    assert len(outputs) == 2 and "a.parquet" in outputs
    assert next(o for o in outputs if o != "a.parquet").startswith("a--")
    assert pq.read_table(data / "outbox" / "a.parquet").column("text").to_pylist() == ["same"]


@pytest.mark.parametrize(
    ("rows_csv", "job", "expected"),
    [
        (b"text\n", JOB_YAML, "has a header but no data rows"),
        (b"text\nx\n", None, "no job for bad.csv"),
        (b"text\nx\n", "model: grok-4.3\nprompt: '{{ txt }}'\n", "'txt'"),
        (
            b"text\nx\n",
            JOB_YAML + "output: /etc/evil.parquet\n",
            "field `output` is not allowed in an inbox job",
        ),
    ],
    ids=["header only", "missing job", "missing column", "output outside outbox"],
)
def test_bad_drops_move_to_failed_with_an_explanation(
    tmp_path: Path, emulator: RunningEmulator, rows_csv: bytes, job: str | None, expected: str
) -> None:
    data = tmp_path / "data"
    inbox = data / "inbox"
    inbox.mkdir(parents=True)
    (inbox / "bad.csv").write_bytes(rows_csv)
    if job is not None:
        (inbox / "bad.job.yaml").write_text(job)
    os.utime(inbox / "bad.csv", (time.time() - 60, time.time() - 60))
    with pytest.raises(PassFailedError, match=r"could not be processed: bad\.csv") as failed:
        scan_inbox(data_dir=str(data), settle_s=5)  # the flow run ends Failed: alerts fire
    assert failed.value.outcome["failed"] == ["bad.csv"]
    assert (data / "failed" / "bad.csv").read_bytes() == rows_csv
    assert expected in (data / "failed" / "bad.error.md").read_text()
    assert list(inbox.iterdir()) == [] and emulator.state.request_log == []


def test_collector_keeps_runs_open_when_the_service_is_unreachable(
    tmp_path: Path, emulator: RunningEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "data"
    drop(data / "inbox", "r.csv", [{"text": "x"}])
    assert scan_inbox(data_dir=str(data), settle_s=1)["submitted"] == ["r.csv"]
    monkeypatch.setenv("XAI_API_KEY", "wrong-key")  # every call now answers 401
    with pytest.raises(Exception, match="could not reach the batch service"):
        collect_pending(data_dir=str(data))
    monkeypatch.setenv("XAI_API_KEY", EMULATOR_KEY)
    collect_until_idle(data)
    assert pq.read_table(data / "outbox" / "r.parquet").num_rows == 1


def test_symlinks_default_named_tables_and_broken_templates(
    tmp_path: Path, emulator: RunningEmulator
) -> None:
    data = tmp_path / "data"
    inbox = data / "inbox"
    secret = tmp_path / "secret.csv"
    secret.write_text("text\nthe worker's private data\n")
    inbox.mkdir(parents=True)
    (inbox / "link.csv").symlink_to(secret)
    (inbox / "default.job.yaml").write_text(JOB_YAML)
    drop(inbox, "default.csv", [{"text": "x"}], job=None)
    drop(
        inbox,
        "evil.csv",
        [{"text": "x"}],
        job='model: grok-4.3\nprompt: "{% if text %}{{ text.__class__ }}{% endif %}"\n',
    )
    with pytest.raises(PassFailedError) as failed:
        scan_inbox(data_dir=str(data), settle_s=0)
    result = failed.value.outcome
    assert sorted(result["failed"]) == ["evil.csv", "link.csv"] and result["submitted"] == ["default.csv"]
    assert "symbolic link" in (data / "failed" / "link.error.md").read_text()
    assert "unsafe" in (data / "failed" / "evil.error.md").read_text()
    assert (inbox / "default.job.yaml").exists()  # the shared job stays for the next drop
    assert secret.read_text().startswith("text")


def test_a_claim_whose_scan_died_before_recording_it_is_taken_again(
    tmp_path: Path, emulator: RunningEmulator
) -> None:
    import subprocess
    import sys

    from tasks.doors import inbox
    from tasks.infra.processes import this_holder

    data = tmp_path / "data"
    table = drop(data / "inbox", "orphan.csv", [{"text": f"thing {i}"} for i in range(5)])
    layout = inbox.InboxLayout.under(data)
    layout.ensure()
    claimed = inbox.claim(table, layout)  # the scan that claimed it is then SIGKILLed:
    assert claimed is not None
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    host = this_holder().rpartition(":")[0]
    marker = claimed.path.with_name(f".{claimed.path.name}.claimed-by")
    marker.write_text(f"{host}:{dead.stdout.strip()}")  # its holder is gone; no ledger row names it

    assert scan_inbox(data_dir=str(data), settle_s=1)["submitted"] == ["orphan.csv"]
    collect_until_idle(data)
    assert pq.read_table(data / "outbox" / "orphan.parquet").num_rows == 5
    assert [p.name for p in (data / "processing").iterdir()] == []
    assert emulator.state.count("POST", "/v1/batches", 200) == 1


def test_a_claim_a_live_scan_is_still_preparing_is_left_alone(tmp_path: Path) -> None:
    from tasks.doors import inbox

    data = tmp_path / "data"
    table = drop(data / "inbox", "busy.csv", [{"text": "x"}])
    layout = inbox.InboxLayout.under(data)
    layout.ensure()
    claimed = inbox.claim(table, layout)  # claimed by this (live) process, not recorded yet
    assert claimed is not None
    assert inbox.stranded(layout, recorded=set()) == []
    assert inbox.stranded(layout, recorded=set(), now=time.time() + inbox.STRANDED_AFTER_S + 1) == [
        claimed.path
    ]
