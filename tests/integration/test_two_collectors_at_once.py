"""Two collectors at once on the shared PostgreSQL ledger (a team's setup): every dropped file
finishes once, no finished run is reported failed, and no analyst is told to drop a file again."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import sqlalchemy as sa

from emulator import RunningEmulator
from tasks.doors import inbox
from tasks.doors.admission import admit_settled
from tasks.infra.ledger import Ledger, metadata
from tests.helpers import EMULATOR_KEY, write_csv
from tests.integration.test_ledger_sqlite_and_postgres import POSTGRES_URL, _postgres_available

COLLECTOR = """
import sys, time
from pathlib import Path
from tasks.doors import inbox
from tasks.doors.collector import collect_pass
from tasks.infra.ledger import Ledger
data = Path(sys.argv[1])
ledger = Ledger(sys.argv[2])
deadline = time.monotonic() + 90
while ledger.open_runs() and time.monotonic() < deadline:
    outcome = collect_pass(ledger, inbox.InboxLayout.under(data))
    print({k: len(v) for k, v in outcome.items() if v}, flush=True)
    time.sleep(0.05)
"""


def test_two_collectors_on_postgres_finish_every_run_once(tmp_path: Path, emulator: RunningEmulator) -> None:
    assert _postgres_available(), "PostgreSQL is not reachable on 127.0.0.1:5432 (.ci/run starts it)"
    engine = sa.create_engine(POSTGRES_URL)
    metadata.drop_all(engine)
    engine.dispose()
    emulator.configure(processing_s=1.0)
    data = tmp_path / "data"
    layout = inbox.InboxLayout.under(data)
    layout.ensure()
    (layout.inbox / "default.job.yaml").write_text("model: grok-4.3\nprompt: 'Classify: {{ text }}'\n")
    names = [f"drop{i}.csv" for i in range(6)]
    for number, name in enumerate(names):
        write_csv(layout.inbox / name, [{"text": f"file {number} row {i}"} for i in range(4)])
    ledger = Ledger(POSTGRES_URL)
    try:
        assert sorted(admit_settled(ledger, layout, data / "runs", settle_s=0)["submitted"]) == names
    finally:
        ledger.close()

    env = {**os.environ, "XAI_BASE_URL": emulator.url, "XAI_API_KEY": EMULATOR_KEY}
    collectors = [
        subprocess.Popen(
            [sys.executable, "-c", COLLECTOR, str(data), POSTGRES_URL],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    logs = [c.communicate(timeout=120) for c in collectors]
    assert all(c.returncode == 0 for c in collectors), logs
    time.sleep(0.1)

    ledger = Ledger(POSTGRES_URL)
    try:
        states = sorted(r["state"] for r in ledger.find_runs(""))
    finally:
        ledger.close()
    assert states == ["finished"] * 6, logs
    assert list(layout.failed.iterdir()) == [], logs  # nobody was told to drop a finished file again
    for name in names:
        table = pq.read_table(layout.outbox / name.replace(".csv", ".parquet"))
        assert table.column("status").to_pylist() == ["succeeded"] * 4
    assert emulator.state.count("POST", "/v1/batches", 200) == 6
    assert "'failed'" not in "".join(out for out, _ in logs)
