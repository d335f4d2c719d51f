"""A bad row ends `rejected` alone, with a reason naming what is wrong; the other rows of its
shard are sent and answered (against the emulator over HTTP)."""

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from emulator import RunningEmulator
from emulator.completions import expected_answer
from tasks.spec.job import build_job
from tests.helpers import request_bodies, run_to_end

JOB = {"model": "grok-4.3", "prompt": "Classify: {{ text }}"}
HUGE = "word " * (30 * 1024 * 1024 // 5)  # a 30 MB cell: over the 25 MB a request may hold


def invalid_utf8_strings(values: list[bytes]) -> pa.Array:
    """A string column holding bytes that are not UTF-8 (as some Parquet writers produce)."""
    raw = pa.array(values, type=pa.binary())
    return pa.Array.from_buffers(pa.string(), len(raw), raw.buffers())


def test_invalid_utf8_in_a_parquet_cell_rejects_that_row_alone(
    tmp_path: Path, emulator: RunningEmulator, data_dir: Path
) -> None:
    src = tmp_path / "in.parquet"
    text = invalid_utf8_strings([b"fine", b"caf\xe9", b"also fine", b"ok"])
    other = invalid_utf8_strings([b"x", b"y", b"z", b"\xff\xfe"])
    pq.write_table(pa.table({"id": ["a", "b", "c", "d"], "text": text, "other": other}), src)
    job = build_job(None, {**JOB, "prompt": "{{ text }} / {{ other }}", "id_column": "id"})
    summary, _ = run_to_end(src, job, data_dir, tmp_path / "out.parquet")
    columns = ["id", "custom_id", "status", "response", "error"]  # the others keep their bytes
    out = pq.read_table(tmp_path / "out.parquet", columns=columns).to_pylist()
    assert [row["status"] for row in out] == ["succeeded", "rejected", "succeeded", "rejected"]
    assert out[1]["error"] == "column 'text' holds text that is not valid UTF-8"
    assert out[3]["error"] == "column 'other' holds text that is not valid UTF-8"
    assert summary.by_status["succeeded"] == 2 and summary.by_status["rejected"] == 2
    bodies = request_bodies(data_dir / "runs" / summary.run_key)
    assert [bodies[row["custom_id"]]["messages"][-1]["content"] for row in out[::2]] == [
        "fine / x",
        "also fine / z",
    ]
    for row in out[::2]:
        assert row["response"] == expected_answer(bodies[row["custom_id"]])


def test_invalid_utf8_rejects_its_row_in_a_template_with_logic(
    tmp_path: Path, emulator: RunningEmulator, data_dir: Path
) -> None:
    src = tmp_path / "in.parquet"
    pq.write_table(pa.table({"text": invalid_utf8_strings([b"caf\xe9", b"fine"])}), src)
    job = build_job(None, {**JOB, "prompt": "{% if text %}Say: {{ text | upper }}{% endif %}"})
    run_to_end(src, job, data_dir, tmp_path / "out.parquet")
    out = pq.read_table(tmp_path / "out.parquet", columns=["status", "error"]).to_pylist()
    assert [row["status"] for row in out] == ["rejected", "succeeded"]
    assert out[0]["error"] == "column 'text' holds text that is not valid UTF-8"


def test_a_30_mb_csv_cell_is_rejected_alone_as_in_parquet(
    tmp_path: Path, emulator: RunningEmulator, data_dir: Path
) -> None:
    rows = [("r0", "small"), ("r1", HUGE), ("r2", "after the big one")]
    csv_path = tmp_path / "in.csv"
    csv_path.write_text("id,text\n" + "".join(f"{i},{t}\n" for i, t in rows), encoding="utf-8")
    parquet_path = tmp_path / "in.parquet"
    pq.write_table(pa.table({"id": [i for i, _ in rows], "text": [t for _, t in rows]}), parquet_path)
    job = build_job(None, {**JOB, "id_column": "id"})
    outcomes = []
    for src in (csv_path, parquet_path):
        out = tmp_path / f"out-{src.suffix[1:]}.parquet"
        run_to_end(src, job, data_dir / src.suffix[1:], out)
        table = pq.read_table(out, columns=["id", "text", "status", "error"])
        assert table.column("text").to_pylist()[1] == HUGE  # the output keeps the cell as it was
        outcomes.append(table.select(["id", "status", "error"]).to_pylist())
    assert outcomes[0] == outcomes[1]
    assert [row["status"] for row in outcomes[0]] == ["succeeded", "rejected", "succeeded"]
    assert outcomes[0][1]["error"].endswith("exceeds grok-4.3's context window")  # its size
