"""An untrusted prompt template, tried on a sample of its table in a process that can be killed.

The sandbox in `tasks.spec.template` bounds what a template can do while it renders in
process; this check is the backstop for anything that escapes those bounds (a loop in C
code, an allocation no hook sees): the template renders the first rows of its table in a
child process with a wall-clock timeout and an address-space limit (RLIMIT_AS). A template
that fails there fails its own drop, with a note, in seconds; the scan goes on.

Plain `{{ column }}` templates run no template code and are not checked.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from pathlib import Path
from typing import Any

from tasks.infra.errors import GrokBatchError, JobSpecError
from tasks.infra.table_io import TableSource
from tasks.spec.template import PromptTemplate, as_text

CHECK_ROWS = 20  # the first rows of the table
CHECK_SECONDS = 10.0  # wall clock for the whole check, the child's start included
CHECK_MEMORY_BYTES = 1 << 30  # address space the child may add to what it holds after imports
_ROOT = Path(__file__).resolve().parents[2]


def check_template_in_child(
    prompt: str,
    table: Path,
    *,
    label: str,
    sheet: str | None = None,
    rows: int = CHECK_ROWS,
    timeout_s: float = CHECK_SECONDS,
    memory_bytes: int = CHECK_MEMORY_BYTES,
) -> None:
    """Render `prompt` on the first `rows` rows of `table` in a child process; raise
    JobSpecError naming `label` (the job file) when it fails, runs out of memory or time.
    A table that cannot be read, or lacks a column, is left for prepare to explain."""
    template = PromptTemplate(prompt)
    if template.simple_parts is not None:
        return  # pure substitution: no template code runs
    sample = _sample(TableSource(table).with_sheet(sheet), template.columns, rows)
    if sample is None:
        return
    columns, count = sample
    payload = json.dumps({"prompt": prompt, "columns": columns, "rows": count, "memory_bytes": memory_bytes})
    env = {
        "PATH": os.environ.get("PATH", ""),
        "PYTHONPATH": str(_ROOT),
        "PYTHONIOENCODING": "utf-8",
    }  # no API key or other secret reaches the child
    try:
        done = subprocess.run(
            [sys.executable, "-m", __name__],
            input=payload.encode("utf-8"),
            capture_output=True,
            timeout=timeout_s,
            env=env,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise JobSpecError(
            f"{label}: the prompt template did not finish rendering the first {count} row(s) within "
            f"{timeout_s:g} s and was stopped; simplify its loops or recursion"
        ) from None
    answer = _answer(done.stdout)
    if answer.get("ok"):
        return
    if "error" in answer:
        raise JobSpecError(f"{label}: {answer['error']}")
    how = f"signal {-done.returncode}" if done.returncode < 0 else f"exit code {done.returncode}"
    raise JobSpecError(
        f"{label}: the prompt template could not be rendered on the first {count} row(s): the check "
        f"process ended with {how} (it may use {memory_bytes >> 20} MB and {timeout_s:g} s); "
        "simplify the template"
    )


def _sample(source: TableSource, columns: list[str], rows: int) -> tuple[dict[str, list[str]], int] | None:
    try:
        schema = source.schema()
        if any(c not in schema.names for c in columns):
            return None
        batch = next(iter(source.batches(batch_rows=rows)), None)
    except Exception:  # prepare reads the table again and explains it
        return None
    if batch is None or batch.num_rows == 0:
        return None
    batch = batch.slice(0, rows)
    try:
        texts = {name: as_text(batch.column(name)).to_pylist() for name in columns}
    except Exception:  # a nested column: check_schema explains in prepare
        return None
    return texts, batch.num_rows


def _answer(stdout: bytes) -> dict[str, Any]:
    lines = stdout.decode("utf-8", "replace").strip().splitlines()
    try:
        answer = json.loads(lines[-1]) if lines else {}
    except json.JSONDecodeError:
        return {}
    return answer if isinstance(answer, dict) else {}


def _limit_memory(extra_bytes: int) -> None:
    """Cap the address space at what this process holds now plus `extra_bytes`."""
    try:
        with open("/proc/self/statm", encoding="ascii") as statm:
            now = int(statm.read().split()[0]) * resource.getpagesize()
    except (OSError, ValueError, IndexError):
        now = 2 << 30
    _soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = now + extra_bytes
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))


def _child() -> None:
    request = json.loads(sys.stdin.buffer.read().decode("utf-8"))
    _limit_memory(int(request["memory_bytes"]))
    try:
        PromptTemplate(request["prompt"]).render_rows(request["columns"], int(request["rows"]))
    except MemoryError:
        answer: dict[str, Any] = {
            "error": f"the prompt template needed more than {int(request['memory_bytes']) >> 20} MB "
            "on the first rows and was stopped"
        }
    except Exception as exc:  # the template's failure, reported to the parent
        answer = {"error": str(exc) if isinstance(exc, GrokBatchError) else f"{type(exc).__name__}: {exc}"}
    else:
        answer = {"ok": True}
    sys.stdout.write("\n" + json.dumps(answer) + "\n")


if __name__ == "__main__":
    _child()
