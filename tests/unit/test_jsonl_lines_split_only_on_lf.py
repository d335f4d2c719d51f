"""An OpenAI output file's lines are split on LF only, wherever the stream's chunks break."""

from __future__ import annotations

import json

import pytest

from tasks.providers.openai_compat import jsonl_lines

RECORDS = [
    {"custom_id": "a", "text": "line\u2028separator"},
    {"custom_id": "b", "text": "next\u0085line and para\u2029graph"},
    {"custom_id": "d", "text": "an escaped \\n and \\r stay inside"},
]


@pytest.mark.parametrize("chunk", [1, 2, 3, 7, 64, 10_000])
@pytest.mark.parametrize("newline", [b"\n", b"\r\n"])
def test_every_record_comes_back_whole_whatever_the_chunk_size(chunk: int, newline: bytes) -> None:
    data = newline.join(json.dumps(r, ensure_ascii=False).encode() for r in RECORDS) + newline
    chunks = [data[i : i + chunk] for i in range(0, len(data), chunk)]
    assert [json.loads(line) for line in jsonl_lines(chunks)] == RECORDS


def test_a_last_line_without_newline_and_blank_lines_are_kept_as_they_are() -> None:
    assert list(jsonl_lines([b'{"a":1}\n\n{"b"', b":2}"])) == [b'{"a":1}', b"", b'{"b":2}']
    assert list(jsonl_lines([])) == [] and list(jsonl_lines([b""])) == []
