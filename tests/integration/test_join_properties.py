"""Property: for any text and any result order, prepare -> emulator -> join puts every
answer on its own row."""

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from emulator import EmulatorConfig, RunningEmulator
from tasks.spec.job import build_job
from tests.helpers import EMULATOR_KEY, assert_answers_on_their_rows, run_to_end

texts = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",)),  # any unicode scalar, controls included
    max_size=60,
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    rows=st.lists(st.tuples(texts, st.integers(0, 3)), min_size=1, max_size=40), seed=st.integers(0, 2**16)
)
def test_answers_land_on_their_own_rows(tmp_path_factory, monkeypatch, rows, seed) -> None:
    tmp = tmp_path_factory.mktemp("prop")
    src = tmp / "in.parquet"
    pq.write_table(pa.table({"text": [t for t, _ in rows], "group": [g for _, g in rows]}), src)
    config = EmulatorConfig(api_key=EMULATOR_KEY, parse_delay_s=0.0, processing_s=0.0, seed=seed)
    with RunningEmulator(config) as server:
        monkeypatch.setenv("XAI_BASE_URL", server.url)
        monkeypatch.setenv("XAI_API_KEY", EMULATOR_KEY)
        job = build_job(
            None, {"model": "grok-4.3", "prompt": "[{{ group }}] {{ text }}", "shard_max_lines": 7}
        )
        out = tmp / "out.parquet"
        summary = run_to_end(src, job, tmp / "data", out)[0]
    table = pq.read_table(out)
    assert table.column("text").to_pylist() == [t for t, _ in rows]
    assert table.num_rows == len(rows) == summary.rows
    assert set(table.column("status").to_pylist()) <= {"succeeded", "rejected"}
    assert_answers_on_their_rows(out, Path(tmp / "data" / "runs" / summary.run_key))
