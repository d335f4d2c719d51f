"""Issue 15 through the inbox: an analyst who drops reviews.xlsx with `output_formats: [xlsx]`
finds reviews.parquet and reviews.xlsx in the outbox, the answers in the same columns; a
gzipped CSV keeps its whole name on the way (processing/reviews--<sha>.csv.gz, its own job
reviews.job.yaml, outbox/reviews.parquet)."""

from __future__ import annotations

import gzip
import os
import time
from pathlib import Path

import openpyxl
import pyarrow.parquet as pq
import pytest

from emulator import RunningEmulator
from flows.scan_inbox import scan_inbox
from tests.integration.test_inbox import collect_until_idle

pytestmark = pytest.mark.usefixtures("prefect_harness")
TEXTS = ["great kettle", "arrived broken, Rückgabe", "一般般", "fine", "=2+2 is text"]


def settle(path: Path) -> None:
    os.utime(path, (time.time() - 60, time.time() - 60))


def test_a_dropped_workbook_comes_back_as_parquet_and_workbook(
    tmp_path: Path, emulator: RunningEmulator
) -> None:
    data = tmp_path / "data"
    inbox = data / "inbox"
    inbox.mkdir(parents=True)
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    sheet.append(["review_id", "text", "stars"])
    for i, text in enumerate(TEXTS):
        sheet.append([f"R{i}", text, i + 1])
        sheet.cell(sheet.max_row, 2).data_type = "s"  # "=2+2 is text" as typed, not a formula
    workbook.save(inbox / "reviews.xlsx")
    (inbox / "reviews.job.yaml").write_text(
        "model: grok-4.3\nprompt: 'Classify ({{ stars }}): {{ text }}'\nid_column: review_id\n"
        "output_formats: [xlsx]\n"
    )
    settle(inbox / "reviews.xlsx")
    assert scan_inbox(data_dir=str(data), settle_s=5)["submitted"] == ["reviews.xlsx"]
    collect_until_idle(data)

    outbox = data / "outbox"
    names = {p.name for p in outbox.iterdir()}
    assert {"reviews.parquet", "reviews.xlsx", "reviews.report.md"} <= names
    assert {n for n in names if n.endswith((".parquet", ".xlsx", ".csv"))} == {
        "reviews.parquet",
        "reviews.xlsx",
    }
    table = pq.read_table(outbox / "reviews.parquet")
    assert table.column("status").to_pylist() == ["succeeded"] * len(TEXTS)
    copy = openpyxl.load_workbook(outbox / "reviews.xlsx", read_only=True)
    rows = list(copy.worksheets[0].iter_rows(values_only=True))
    copy.close()
    assert list(rows[0]) == table.column_names  # the answers in the same columns
    response = table.column_names.index("response")
    assert [row[response] for row in rows[1:]] == table.column("response").to_pylist()
    assert [row[:3] for row in rows[1:]] == [(f"R{i}", t, i + 1) for i, t in enumerate(TEXTS)]
    archived = sorted(p.name for p in (data / "archive").iterdir())
    stem = archived[0].removesuffix(".job.yaml")
    assert stem.startswith("reviews--") and archived == [f"{stem}.job.yaml", f"{stem}.xlsx"]


def test_a_dropped_gzipped_csv_keeps_its_whole_name(tmp_path: Path, emulator: RunningEmulator) -> None:
    data = tmp_path / "data"
    inbox = data / "inbox"
    inbox.mkdir(parents=True)
    rows = "text\n" + "".join(f'"{text}"\n' for text in TEXTS)
    (inbox / "reviews.csv.gz").write_bytes(gzip.compress(rows.encode("utf-8")))
    (inbox / "reviews.job.yaml").write_text("model: grok-4.3\nprompt: 'Classify: {{ text }}'\n")
    settle(inbox / "reviews.csv.gz")
    assert scan_inbox(data_dir=str(data), settle_s=5)["submitted"] == ["reviews.csv.gz"]
    claimed = sorted(p.name for p in (data / "processing").iterdir() if not p.name.startswith("."))
    assert len(claimed) == 2
    assert claimed[0].startswith("reviews--") and claimed[0].endswith(".csv.gz")  # reviews--<sha>.csv.gz
    assert claimed[1] == claimed[0].removesuffix(".csv.gz") + ".job.yaml"  # its own job beside it
    collect_until_idle(data)
    assert pq.read_table(data / "outbox" / "reviews.parquet").num_rows == len(TEXTS)
    assert sorted(p.name for p in (data / "archive").iterdir()) == claimed
