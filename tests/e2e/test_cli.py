"""The grok-batch command line: help that teaches, clear errors, a real run."""

from pathlib import Path

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from emulator import RunningEmulator
from flows.cli import app
from tests.helpers import write_csv

runner = CliRunner()
COMMANDS = ["run", "resume", "status", "cancel", "serve", "emulator", "demo"]


def test_top_level_help_shows_an_example() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    assert "grok-batch demo" in result.output and "grok-batch run" in result.output
    for command in COMMANDS:
        assert command in result.output


@pytest.mark.parametrize("command", COMMANDS)
def test_every_subcommand_help_has_an_example(command: str) -> None:
    result = runner.invoke(app, [command, "--help"])
    assert result.exit_code == 0
    assert "Example" in result.output


@pytest.mark.usefixtures("prefect_harness")
def test_bad_job_is_refused_before_anything_is_sent(tmp_path: Path, emulator: RunningEmulator) -> None:
    src = write_csv(tmp_path / "in.csv", [{"text": "x"}])
    result = runner.invoke(app, ["run", str(src), "--model", "grok-4.3", "--data-dir", str(tmp_path)])
    assert result.exit_code == 2
    assert "field `prompt`" in result.output
    result = runner.invoke(
        app, ["run", str(src), "--model", "grok-4.3", "--prompt", "{{ txt }}", "--data-dir", str(tmp_path)]
    )
    assert result.exit_code == 2 and "'txt'" in result.output
    assert emulator.state.request_log == []


@pytest.mark.usefixtures("prefect_harness")
def test_run_command_end_to_end(tmp_path: Path, emulator: RunningEmulator) -> None:
    src = write_csv(tmp_path / "in.csv", [{"text": "I love it"}, {"text": "broken"}])
    out = tmp_path / "out.parquet"
    args = ["run", str(src), "--model", "grok-4.3", "--prompt", "Classify: {{ text }}", "-p", "temperature=0"]
    result = runner.invoke(
        app, [*args, "-o", str(out), "--data-dir", str(tmp_path / "d"), "--poll-interval", "0.1"]
    )
    assert result.exit_code == 0, result.output
    assert "succeeded" in result.output and str(out) in result.output
    table = pq.read_table(out)
    assert table.column("status").to_pylist() == ["succeeded", "succeeded"]
    assert table.column("response").to_pylist()[0].startswith("positive")
    status = runner.invoke(app, ["status", "--data-dir", str(tmp_path / "d")])
    assert "finished" in status.output


def test_status_of_an_empty_data_dir_creates_nothing(tmp_path: Path) -> None:
    result = runner.invoke(app, ["status", "--data-dir", str(tmp_path / "nothing")])
    assert result.exit_code == 0 and "no runs yet" in result.output
    assert not (tmp_path / "nothing").exists()


def test_an_excel_sheet_in_and_csv_and_excel_copies_out(tmp_path: Path, emulator: RunningEmulator) -> None:
    from openpyxl import Workbook, load_workbook

    book = Workbook()
    book.active.append(["text"])
    book.active.append(["not this sheet"])
    sheet = book.create_sheet("Reviews 2024")
    for row in (["text"], ["I love it"], ["broken"]):
        sheet.append(row)
    src = tmp_path / "in.xlsx"
    book.save(src)
    out = tmp_path / "out.parquet"
    args = [
        "run",
        str(src),
        "--sheet",
        "Reviews 2024",
        "--model",
        "grok-4.3",
        "--prompt",
        "Classify: {{ text }}",
    ]
    args += [
        "--output-format",
        "csv",
        "--output-format",
        "xlsx",
        "-o",
        str(out),
        "--data-dir",
        str(tmp_path / "d"),
    ]
    result = runner.invoke(app, [*args, "--poll-interval", "0.1"])
    assert result.exit_code == 0, result.output
    assert pq.read_table(out).column("text").to_pylist() == ["I love it", "broken"]
    assert (tmp_path / "out.csv").read_text(encoding="utf-8").splitlines()[1].startswith('"I love it"')
    copied = load_workbook(tmp_path / "out.xlsx", read_only=True).active
    assert [row[0] for row in copied.iter_rows(values_only=True)] == ["text", "I love it", "broken"]
