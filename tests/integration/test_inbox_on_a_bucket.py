"""The inbox on a bucket (issue 14): inbox/, processing/, outbox/, archive/ and failed/ are
prefixes of an S3 data root (a real SeaweedFS server); a drop is claimed once even when two
scanners on two machines race for it, its output lands in the bucket's outbox and the drop
in its archive; a bad drop ends in failed/ with its note, in the bucket."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from emulator import RunningEmulator
from tasks.doors import inbox
from tasks.infra.errors import PassFailedError
from tasks.infra.ledger import Ledger, default_ledger_url
from tasks.infra.run_layout import data_root
from tasks.infra.storage import Location, locate

JOB_YAML = "model: grok-4.3\nprompt: 'Classify: {{ text }}'\n"
ROOT = Path(__file__).resolve().parents[2]


def put_csv(folder: Location, name: str, texts: list[str]) -> Location:
    target = folder.child(name)
    target.write_text("text\n" + "".join(f'"{text}"\n' for text in texts))
    return target


def names(folder: Location) -> list[str]:
    return [found.name for found, _info in folder.files()]


def _in_processing(root: Location, claimed: inbox.Claimed) -> str:
    """Asserts the claimed drop, its job and its claim marker are all in processing/; its stem."""
    stem = claimed.path.name.removesuffix(".csv")
    assert sorted(names(root.child("processing"))) == [
        f".{stem}.csv.claimed-by",
        f"{stem}.csv",
        f"{stem}.job.yaml",
    ]
    return stem


@pytest.fixture
def machine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """This test's machine: its own working copies (nothing of another test's cache)."""
    work = tmp_path / "work"
    monkeypatch.setenv("GROK_BATCH_WORK_DIR", str(work))
    return work


@pytest.mark.usefixtures("prefect_harness", "machine")
def test_a_drop_in_the_bucket_runs_once_and_lands_in_the_bucket_outbox(
    s3_env: str, emulator: RunningEmulator
) -> None:
    from flows.collect import collect_pending
    from flows.scan_inbox import scan_inbox

    root = locate(s3_env)
    texts = [f"great kettle {i}" for i in range(7)]
    put_csv(root.child("inbox"), "reviews.csv", texts)
    root.child("inbox", "reviews.job.yaml").write_text(JOB_YAML)

    # Just written, by the store's own clock: left for a later scan.
    assert scan_inbox(data_dir=s3_env, settle_s=3600)["submitted"] == []
    assert names(root.child("inbox")) == ["reviews.csv", "reviews.job.yaml"]

    assert scan_inbox(data_dir=s3_env, settle_s=0)["submitted"] == ["reviews.csv"]
    assert names(root.child("inbox")) == []
    assert scan_inbox(data_dir=s3_env, settle_s=0)["submitted"] == []  # claimed once
    deadline = time.monotonic() + 60
    while collect_pending(data_dir=s3_env)["advanced"]:
        assert time.monotonic() < deadline, "the run did not finish"
        time.sleep(0.2)

    output = pq.read_table(io.BytesIO(root.child("outbox", "reviews.parquet").read_bytes()))
    assert output.column("text").to_pylist() == texts
    assert output.column("status").to_pylist() == ["succeeded"] * len(texts)
    assert "succeeded | 7" in root.child("outbox", "reviews.report.md").read_text()
    archived = names(root.child("archive"))
    stem = archived[0].removesuffix(".csv")
    assert stem.startswith("reviews--") and archived == [f"{stem}.csv", f"{stem}.job.yaml"]
    assert names(root.child("processing")) == []  # no claim marker left behind either
    assert emulator.state.count("POST", "/v1/batches", 200) == 1

    ledger = Ledger(default_ledger_url(data_root(s3_env)))
    try:
        (run,) = ledger.find_runs("")
    finally:
        ledger.close()
    # The run names its input where it now is, as any machine can find it.
    assert run["input_path"] == root.child("archive", f"{stem}.csv").url
    assert run["output_path"] == root.child("outbox", "reviews.parquet").url


@pytest.mark.usefixtures("prefect_harness", "machine")
def test_a_bad_drop_in_the_bucket_ends_in_failed_with_its_note(
    s3_env: str, emulator: RunningEmulator
) -> None:
    from flows.scan_inbox import scan_inbox

    root = locate(s3_env)
    root.child("inbox", "empty.csv").write_text("text\n")  # a header and no rows
    root.child("inbox", "empty.job.yaml").write_text(JOB_YAML)
    put_csv(root.child("inbox"), "orphan.csv", ["x"])  # no job for it, and no default job
    root.child("inbox", "evil.job.yaml").write_text(JOB_YAML + "output: s3://elsewhere/x.parquet\n")
    put_csv(root.child("inbox"), "evil.csv", ["x"])
    with pytest.raises(PassFailedError) as failed:
        scan_inbox(data_dir=s3_env, settle_s=0)
    assert sorted(failed.value.outcome["failed"]) == ["empty.csv", "evil.csv", "orphan.csv"]

    assert names(root.child("inbox")) == []
    assert sorted(names(root.child("failed"))) == [
        "empty.csv",
        "empty.error.md",
        "empty.job.yaml",
        "evil.csv",
        "evil.error.md",
        "evil.job.yaml",
        "orphan.csv",
        "orphan.error.md",
    ]
    assert root.child("failed", "empty.csv").read_text() == "text\n"
    notes = {
        name: root.child("failed", f"{name}.error.md").read_text() for name in ("empty", "orphan", "evil")
    }
    assert "has a header but no data rows" in notes["empty"]
    assert "no job for orphan.csv" in notes["orphan"]
    assert "field `output` is not allowed in an inbox job" in notes["evil"]
    assert f"drop the file into the inbox again ({root.child('inbox').url})" in notes["orphan"]
    assert names(root.child("processing")) == [] and emulator.state.request_log == []


HOLDER = """
import sys
from tasks.doors import inbox
from tasks.infra.ledger import Ledger
from tasks.infra.run_layout import data_root
root = data_root(sys.argv[1])
layout = inbox.InboxLayout.under(root)
ledger = Ledger(sys.argv[2])
with inbox.held(layout.inbox / sys.argv[3], ledger) as ours:
    print(ours, flush=True)
    sys.stdin.read()  # holds the drop until killed
"""


def test_a_drop_another_scanner_is_claiming_is_left_to_it_and_taken_once_that_one_dies(
    s3_env: str, tmp_path: Path, machine: Path
) -> None:
    root = locate(s3_env)
    put_csv(root.child("inbox"), "busy.csv", ["x", "y"])
    root.child("inbox", "busy.job.yaml").write_text(JOB_YAML)
    ledger_url = f"sqlite:///{tmp_path / 'ledger.sqlite'}"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, s3_env, ledger_url, "busy.csv"],
        env={**os.environ, "GROK_BATCH_WORK_DIR": str(tmp_path / "other-machine"), "PYTHONPATH": str(ROOT)},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    ledger = Ledger(ledger_url)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "True"
        layout = inbox.InboxLayout.under(data_root(s3_env))
        table = layout.inbox / "busy.csv"
        assert inbox.claim(table, layout, ledger) is None  # its turn is the other scanner's
        assert names(root.child("inbox")) == ["busy.csv", "busy.job.yaml"]
        assert names(root.child("processing")) == []

        holder.kill()  # SIGKILLed mid-claim: on its own machine a dead holder is seen at once
        holder.wait(timeout=30)
        claimed = inbox.claim(table, layout, ledger)
        assert claimed is not None and claimed.name == "busy.csv"
        assert names(root.child("inbox")) == []
        stem = _in_processing(root, claimed)
        assert root.child("processing", f"{stem}.csv").read_text() == 'text\n"x"\n"y"\n'
        assert claimed.path.read_text() == 'text\n"x"\n"y"\n'  # this machine's copy, for the run
        assert inbox.claim(table, layout, ledger) is None  # gone: nobody claims it twice
    finally:
        ledger.close()
        if holder.poll() is None:
            holder.kill()
            holder.wait(timeout=30)


SCANNER = """
import json, sys, time
from pathlib import Path
from tasks.doors import inbox
from tasks.doors.admission import admit_settled
from tasks.infra.ledger import Ledger
from tasks.infra.run_layout import data_root
root = data_root(sys.argv[1])
go = Path(sys.argv[3])
print("ready", flush=True)
deadline = time.monotonic() + 60
while not go.exists() and time.monotonic() < deadline:
    time.sleep(0.01)
ledger = Ledger(sys.argv[2])
try:
    outcome = admit_settled(ledger, inbox.InboxLayout.under(root), root / "runs", settle_s=0)
finally:
    ledger.close()
print(json.dumps(outcome), flush=True)
"""


def test_two_scanners_on_two_machines_racing_for_the_same_drops_claim_each_once(
    s3_env: str, tmp_path: Path, machine: Path, emulator: RunningEmulator
) -> None:
    root = locate(s3_env)
    drops = [f"drop{i}.csv" for i in range(5)]
    run_id = uuid.uuid4().hex  # contents of this test alone: runs of no other test match them
    for number, name in enumerate(drops):
        put_csv(root.child("inbox"), name, [f"{run_id} file {number} row {i}" for i in range(3)])
    root.child("inbox", "default.job.yaml").write_text(JOB_YAML)
    ledger_url = f"sqlite:///{tmp_path / 'ledger.sqlite'}"  # the one ledger both machines share
    Ledger(ledger_url).close()  # made before the race: the race is over the drops
    go = tmp_path / "go"
    scanners = [
        subprocess.Popen(
            [sys.executable, "-c", SCANNER, s3_env, ledger_url, str(go)],
            env={
                **os.environ,
                "GROK_BATCH_WORK_DIR": str(tmp_path / f"machine-{n}"),
                "PYTHONPATH": str(ROOT),
            },
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n in range(2)
    ]
    for scanner in scanners:  # both have imported everything and wait on the start line
        assert scanner.stdout is not None and scanner.stdout.readline().strip() == "ready"
    go.touch()
    logs = [scanner.communicate(timeout=180) for scanner in scanners]
    assert all(scanner.returncode == 0 for scanner in scanners), logs
    outcomes = [json.loads(out.strip().splitlines()[-1]) for out, _err in logs]

    submitted = [name for outcome in outcomes for name in outcome["submitted"]]
    assert sorted(submitted) == drops, outcomes  # each drop by exactly one of them
    assert all(outcome["duplicates"] == outcome["failed"] == [] for outcome in outcomes), outcomes
    assert names(root.child("inbox")) == ["default.job.yaml"]
    claimed = [name for name in names(root.child("processing")) if not name.startswith(".")]
    assert sorted(inbox.dropped_name(Path(name)) for name in claimed) == drops
    assert emulator.state.count("POST", "/v1/batches", 200) == len(drops)


def test_a_claim_whose_scan_died_before_recording_it_is_taken_again_from_the_bucket(
    s3_env: str, tmp_path: Path, machine: Path, emulator: RunningEmulator
) -> None:
    from tasks.doors.admission import admit_settled
    from tasks.infra.processes import this_holder

    root = locate(s3_env)
    put_csv(root.child("inbox"), "orphan.csv", [f"{uuid.uuid4().hex} thing {i}" for i in range(4)])
    root.child("inbox", "orphan.job.yaml").write_text(JOB_YAML)
    layout = inbox.InboxLayout.under(data_root(s3_env))
    ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.sqlite'}")
    try:
        claimed = inbox.claim(layout.inbox / "orphan.csv", layout, ledger)
        assert claimed is not None
        dead = subprocess.run(
            [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
        )
        marker = root.child("processing", f".{claimed.path.name}.claimed-by")
        marker.write_text(f"{this_holder().rpartition(':')[0]}:{dead.stdout.strip()}")  # its scan was killed

        outcome = admit_settled(ledger, layout, layout.processing.parent / "runs", settle_s=0)
        assert outcome["submitted"] == ["orphan.csv"], outcome
        (run,) = ledger.find_runs("")
    finally:
        ledger.close()
    assert names(root.child("inbox")) == []
    stem = _in_processing(root, claimed)
    assert run["input_path"] == root.child("processing", f"{stem}.csv").url and run["origin"] == "inbox"
    assert emulator.state.count("POST", "/v1/batches", 200) == 1
