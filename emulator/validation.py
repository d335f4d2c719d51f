"""Checks a batch's JSONL input file the way both services do at parse time.

One set of rules, two reports: xAI stops at the first problem and shows one
sentence (`cancel_by_xai_message`); OpenAI lists every bad line in `errors.data`
with a code and a line number. Each problem carries both texts.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Problem:
    code: str
    message: str  # OpenAI's errors.data message
    summary: str  # xAI's sentence, shown after "JSONL file validation failed: "
    line: int | None = None
    param: str | None = None

    def as_openai(self) -> dict[str, Any]:
        return {"code": self.code, "line": self.line, "message": self.message, "param": self.param}


class ValidationFailedError(Exception):
    def __init__(self, problems: list[Problem]) -> None:
        super().__init__(problems[0].summary)
        self.problems = problems


def _file_problem(code: str, message: str) -> ValidationFailedError:
    return ValidationFailedError([Problem(code, message, message)])


def parse_requests(
    content: bytes | None,
    file_id: str | None,
    *,
    max_lines: int,
    urls: frozenset[str],
    models: frozenset[str] | None,
    max_problems: int = 1,
) -> tuple[list[str], list[dict[str, Any]]]:
    """custom_ids and bodies in input order; raises with up to `max_problems` problems.

    `models=None` accepts any model name (OpenAI mode without a model list).
    """
    if content is None:
        raise _file_problem("file_not_found", f"input file {file_id} not found")
    lines = [line for line in content.split(b"\n") if line.strip()]
    if not lines:
        raise _file_problem("empty_file", "the file holds no requests")
    if len(lines) > max_lines:
        raise _file_problem(
            "too_many_requests", f"{len(lines)} requests exceed the maximum of {max_lines} per file"
        )
    custom_ids: list[str] = []
    bodies: list[dict[str, Any]] = []
    problems: list[Problem] = []
    seen: set[str] = set()
    for number, raw in enumerate(lines, start=1):
        checked = _check_line(number, raw, seen, urls, models)
        if isinstance(checked, Problem):
            problems.append(checked)
            if len(problems) >= max_problems:
                break
        else:
            custom_ids.append(checked[0])
            bodies.append(checked[1])
    if problems:
        raise ValidationFailedError(problems)
    return custom_ids, bodies


def _at(n: int, code: str, detail: str, param: str | None = None) -> Problem:
    """A problem on line `n`: OpenAI lists the detail with the line number beside it, xAI prefixes it."""
    return Problem(code, f"{detail}.", f"line {n}: {detail}", n, param)


def _check_line(
    n: int, raw: bytes, seen: set[str], urls: frozenset[str], models: frozenset[str] | None
) -> tuple[str, dict[str, Any]] | Problem:
    try:
        line = json.loads(raw)
    except ValueError:
        return Problem("invalid_json_line", "This line is not valid JSON.", f"line {n} is not valid JSON", n)
    if not isinstance(line, dict):
        return Problem(
            "invalid_request", "This line is not a JSON object.", f"line {n} is not a JSON object", n
        )
    custom_id = line.get("custom_id")
    if not isinstance(custom_id, str) or not custom_id:
        return _at(n, "missing_required_parameter", "custom_id is missing", "custom_id")
    if custom_id in seen:
        return _at(n, "duplicate_custom_id", f"duplicate custom_id {custom_id!r}", "custom_id")
    seen.add(custom_id)
    if line.get("method") != "POST":
        return _at(n, "invalid_request", "method must be POST", "method")
    url = line.get("url")
    if url not in urls:
        return _at(n, "invalid_url", f"unsupported url {url!r}", "url")
    body = line.get("body")
    if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
        return _at(n, "missing_required_parameter", "body.messages is missing", "body.messages")
    model = body.get("model")
    if models is None and not isinstance(model, str):
        return _at(n, "missing_required_parameter", "body.model is missing", "body.model")
    if models is not None and model not in models:
        message = f"Model {model} is not supported for batch processing."
        return Problem("model_not_found", message, message, n, "body.model")
    return custom_id, body
