"""The emulator's OpenAI Batch mode behaves like OpenAI's service (reference §2.3, §3, §7),
seen through the real openai SDK over HTTP; plus structured answers and both usage shapes."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import openai
import pytest
from openai.types import Batch

from emulator import EmulatorConfig, RunningEmulator
from emulator.completions import chat_completion, chat_completion_json, expected_answer, structured_answer
from tests.helpers import EMULATOR_KEY

TERMINAL = {"completed", "failed", "expired", "cancelled"}
REASONING_MODEL = "grok-4.20-0309-reasoning"
SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "sentiment": {"type": "string", "enum": ["positive", "negative", "neutral"]},
        "label": {"type": "string", "enum": ["spam", "ham"]},
        "summary": {"type": "string"},
        "stars": {"type": "integer", "minimum": 1, "maximum": 10},
        "confidence": {"type": "number", "minimum": 0, "maximum": 1},
        "recommend": {"type": "boolean"},
        "note": {"type": ["string", "null"]},
        "topic": {"$ref": "#/$defs/topic"},
        "tags": {"type": "array", "items": {"type": "string"}},
    },
    "required": [
        "sentiment",
        "label",
        "summary",
        "stars",
        "confidence",
        "recommend",
        "note",
        "topic",
        "tags",
    ],
    "additionalProperties": False,
    "$defs": {
        "topic": {
            "type": "object",
            "properties": {"name": {"type": "string"}, "weight": {"type": "integer"}},
            "required": ["name", "weight"],
            "additionalProperties": False,
        }
    },
}
JSON_SCHEMA_FORMAT = {
    "type": "json_schema",
    "json_schema": {"name": "review", "schema": SCHEMA, "strict": True},
}


@pytest.fixture
def server() -> Iterator[RunningEmulator]:
    config = EmulatorConfig(api_key=EMULATOR_KEY, parse_delay_s=0.05, processing_s=0.2, retry_after_s=0.01)
    with RunningEmulator(config) as running:
        yield running


def client_of(server: RunningEmulator, base_url: str | None = None, max_retries: int = 2) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=base_url or server.openai_url, api_key=EMULATOR_KEY, max_retries=max_retries
    )


def request(custom_id: str, text: str = "hello", model: str = "gpt-4o-mini", **extra: Any) -> dict[str, Any]:
    body = {"model": model, "messages": [{"role": "user", "content": text}], **extra}
    return {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions", "body": body}


def submit(
    client: openai.OpenAI, tmp_path: Path, lines: list[dict[str, Any]], metadata: dict[str, str] | None = None
) -> Batch:
    path = tmp_path / "requests.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    uploaded = client.files.create(file=path, purpose="batch")
    return client.batches.create(
        input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h", metadata=metadata
    )


def wait(client: openai.OpenAI, batch: Batch, until: set[str] = TERMINAL) -> tuple[Batch, list[str]]:
    """Poll (bounded) until the batch reaches one of `until`; returns it and the statuses seen."""
    seen = [batch.status]
    for _ in range(200):
        batch = client.batches.retrieve(batch.id)
        if seen[-1] != batch.status:
            seen.append(batch.status)
        if batch.status in until:
            return batch, seen
        time.sleep(0.02)
    raise AssertionError(f"batch went through {seen} but never reached {until}")


def read_lines(client: openai.OpenAI, file_id: str | None) -> list[dict[str, Any]]:
    assert file_id, "expected a file"
    return [json.loads(line) for line in client.files.content(file_id).text.splitlines()]


def ids(lines: list[dict[str, Any]]) -> list[str]:
    return [line["custom_id"] for line in lines]


# -- lifecycle --------------------------------------------------------------------------------
def test_happy_path_statuses_output_file_and_usage_shape(tmp_path: Path, server: RunningEmulator) -> None:
    server.config.parse_delay_s = 0.2
    client = client_of(server)
    lines = [request(f"r{i:02d}", f"I love it, take {i}", model=REASONING_MODEL) for i in range(30)]
    created = submit(client, tmp_path, lines, metadata={"run": "happy", "shard": "0"})
    assert created.id.startswith("batch_") and created.object == "batch"
    assert created.status == "validating" and created.request_counts is not None
    assert created.request_counts.total == 0 and created.output_file_id is None
    batch, seen = wait(client, created)
    assert seen == ["validating", "in_progress", "completed"]
    assert batch.metadata == {"run": "happy", "shard": "0"} and batch.error_file_id is None
    assert batch.request_counts is not None and batch.request_counts.model_dump() == {
        "total": 30,
        "completed": 30,
        "failed": 0,
    }
    assert batch.in_progress_at and batch.finalizing_at and batch.completed_at and batch.failed_at is None
    output = read_lines(client, batch.output_file_id)
    assert sorted(ids(output)) == [line["custom_id"] for line in lines]
    assert ids(output) != sorted(ids(output))  # the order is shuffled, join by custom_id
    bodies = {line["custom_id"]: line["body"] for line in lines}
    for line in output:
        assert line["id"].startswith("batch_req_") and line["error"] is None
        assert line["response"]["status_code"] == 200 and line["response"]["request_id"].startswith("req_")
        body = line["response"]["body"]
        assert body["choices"][0]["message"]["content"] == expected_answer(bodies[line["custom_id"]])
        usage = body["usage"]
        reasoning = usage["completion_tokens_details"]["reasoning_tokens"]
        assert "cost_in_usd_ticks" not in usage and reasoning > 0
        assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
        assert usage["completion_tokens"] > reasoning  # OpenAI counts reasoning inside completion
    assert batch.usage is not None
    assert batch.usage.output_tokens == sum(
        line["response"]["body"]["usage"]["completion_tokens"] for line in output
    )
    info = client.files.retrieve(batch.output_file_id or "")
    assert info.purpose == "batch_output" and info.bytes > 0
    with client.with_streaming_response.files.content(batch.output_file_id or "") as streamed:
        assert streamed.read() == client.files.content(batch.output_file_id or "").read()
    assert client.files.delete(batch.output_file_id or "").deleted
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(batch.output_file_id or "")


def test_list_newest_first_with_metadata_and_cursor_pagination(
    tmp_path: Path, server: RunningEmulator
) -> None:
    client = client_of(server)
    made = [submit(client, tmp_path, [request("x")], metadata={"n": str(i)}).id for i in range(5)]
    httpx.post(  # an xAI batch: a separate record, never listed by the OpenAI routes
        f"{server.url}/batches", json={"name": "xai"}, headers={"Authorization": f"Bearer {EMULATOR_KEY}"}
    ).raise_for_status()
    first = client.batches.list(limit=2)
    assert [b.id for b in first.data] == made[::-1][:2] and first.has_more
    everything = list(client.batches.list(limit=2))  # auto-pagination follows `after`
    assert [b.id for b in everything] == made[::-1]
    assert [b.metadata for b in everything] == [{"n": str(i)} for i in reversed(range(5))]
    assert server.state.count("GET", "/openai/v1/batches", 200) == 4  # 1 + three pages of 2, 2, 1


@pytest.mark.parametrize(
    ("lines", "code", "line_number"),
    [
        ([request("a"), request("b"), request("a")], "duplicate_custom_id", 3),
        ([request("a"), {**request("b"), "url": "/v1/responses"}], "invalid_url", 2),
        ([request("a"), request("b", model="gpt-9")], "model_not_found", 2),
    ],
)
def test_invalid_file_fails_with_errors_naming_the_line(
    tmp_path: Path, server: RunningEmulator, lines: list[dict[str, Any]], code: str, line_number: int
) -> None:
    server.config.openai_models = frozenset({"gpt-4o-mini"})
    client = client_of(server)
    batch, seen = wait(client, submit(client, tmp_path, lines))
    assert seen == ["validating", "failed"] and batch.failed_at is not None
    assert batch.output_file_id is None and batch.error_file_id is None and batch.in_progress_at is None
    assert batch.errors is not None and batch.errors.data is not None
    [error] = batch.errors.data
    assert (error.code, error.line) == (code, line_number) and error.message


def test_create_and_upload_refuse_bad_parameters(tmp_path: Path, server: RunningEmulator) -> None:
    client = client_of(server)
    path = tmp_path / "a.jsonl"
    path.write_text(json.dumps(request("a")) + "\n", encoding="utf-8")
    file_id = client.files.create(file=path, purpose="batch").id
    good: dict[str, Any] = {
        "input_file_id": file_id,
        "endpoint": "/v1/chat/completions",
        "completion_window": "24h",
    }
    for bad in (
        {"endpoint": "/v1/unknown"},
        {"completion_window": "48h"},
        {"metadata": {str(i): "v" for i in range(17)}},
    ):
        with pytest.raises(openai.BadRequestError) as info:
            client.batches.create(**{**good, **bad})
        assert info.value.body["param"] == next(iter(bad))
    with pytest.raises(openai.NotFoundError):
        client.batches.create(**{**good, "input_file_id": "file_missing"})
    with pytest.raises(openai.NotFoundError):
        client.batches.retrieve("batch_missing")
    no_purpose = httpx.post(
        f"{server.openai_url}/files",
        files={"file": ("a.jsonl", b"{}\n")},
        headers={"Authorization": f"Bearer {EMULATOR_KEY}"},
    )
    assert no_purpose.status_code == 400 and no_purpose.json()["error"]["param"] == "purpose"
    assert server.state.openai.batches == {}


def test_everything_failed_is_completed_without_output_file(tmp_path: Path, server: RunningEmulator) -> None:
    server.config.fail_rate = 1.0
    client = client_of(server)
    batch, _ = wait(client, submit(client, tmp_path, [request(f"r{i}") for i in range(8)]))
    assert batch.status == "completed" and batch.output_file_id is None  # the documented trap
    assert batch.request_counts is not None and batch.request_counts.failed == 8
    errors = read_lines(client, batch.error_file_id)
    assert sorted(ids(errors)) == [f"r{i}" for i in range(8)]
    for line in errors:
        assert line["error"] is None and line["response"]["status_code"] == 500
        assert line["response"]["body"]["error"]["type"] == "server_error"


def test_partial_failures_split_ids_between_output_and_error_files(
    tmp_path: Path, server: RunningEmulator
) -> None:
    server.config.fail_rate = 0.4
    client = client_of(server)
    batch, _ = wait(client, submit(client, tmp_path, [request(f"r{i}") for i in range(40)]))
    good, bad = ids(read_lines(client, batch.output_file_id)), ids(read_lines(client, batch.error_file_id))
    assert good and bad and not set(good) & set(bad)
    assert sorted(good + bad) == sorted(f"r{i}" for i in range(40))
    assert batch.request_counts is not None
    assert (batch.request_counts.completed, batch.request_counts.failed) == (len(good), len(bad))


def test_expired_batch_salvages_finished_work(tmp_path: Path, server: RunningEmulator) -> None:
    server.configure(processing_s=2.0, expire_after_s=0.6)
    client = client_of(server)
    batch, seen = wait(client, submit(client, tmp_path, [request(f"r{i}") for i in range(20)]))
    assert seen == ["validating", "in_progress", "expired"] and batch.expired_at is not None
    salvaged, expired = read_lines(client, batch.output_file_id), read_lines(client, batch.error_file_id)
    assert salvaged and expired and sorted(ids(salvaged) + ids(expired)) == sorted(f"r{i}" for i in range(20))
    assert all(line["response"]["status_code"] == 200 for line in salvaged)
    for line in expired:
        assert line["response"] is None and line["error"]["code"] == "batch_expired"
    assert batch.request_counts is not None and batch.request_counts.completed == len(salvaged)


def test_cancel_goes_through_cancelling_and_keeps_finished_rows(
    tmp_path: Path, server: RunningEmulator
) -> None:
    server.configure(processing_s=2.0, cancelling_s=0.2)
    client = client_of(server)
    batch, _ = wait(client, submit(client, tmp_path, [request(f"r{i}") for i in range(40)]), {"in_progress"})
    for _ in range(200):
        counts = client.batches.retrieve(batch.id).request_counts
        if counts is not None and counts.completed >= 3:
            break
        time.sleep(0.02)
    cancelling = client.batches.cancel(batch.id)
    assert cancelling.status == "cancelling" and cancelling.cancelling_at is not None
    batch, seen = wait(client, cancelling)
    assert seen == ["cancelling", "cancelled"] and batch.cancelled_at is not None
    kept, dropped = read_lines(client, batch.output_file_id), read_lines(client, batch.error_file_id)
    assert batch.request_counts is not None and len(kept) == batch.request_counts.completed >= 3
    assert dropped and {line["error"]["code"] for line in dropped} == {"batch_cancelled"}
    assert sorted(ids(kept) + ids(dropped)) == sorted(f"r{i}" for i in range(40))
    with pytest.raises(openai.BadRequestError, match="Cannot cancel a batch with status 'cancelled'"):
        client.batches.cancel(batch.id)


def test_cancel_while_validating_ends_without_files(tmp_path: Path, server: RunningEmulator) -> None:
    server.config.parse_delay_s = 5.0
    client = client_of(server)
    batch = client.batches.cancel(submit(client, tmp_path, [request("a")]).id)
    assert batch.status == "cancelled" and batch.in_progress_at is None
    assert (batch.output_file_id, batch.error_file_id) == (None, None)


def test_finalizing_shows_before_completed(tmp_path: Path, server: RunningEmulator) -> None:
    server.config.finalizing_s = 0.3
    client = client_of(server)
    batch, seen = wait(client, submit(client, tmp_path, [request("a"), request("b")]), {"finalizing"})
    assert batch.finalizing_at is not None and batch.output_file_id is None and batch.completed_at is None
    assert batch.request_counts is not None and batch.request_counts.completed == 2
    batch, seen = wait(client, batch)
    assert seen == ["finalizing", "completed"] and batch.output_file_id


def test_clean_batch_can_show_an_empty_error_file_id(tmp_path: Path, server: RunningEmulator) -> None:
    server.config.error_file_id_empty = True
    client = client_of(server)
    batch, _ = wait(client, submit(client, tmp_path, [request("a")]))
    assert batch.status == "completed" and batch.error_file_id == "" and batch.output_file_id


# -- protocol selection -----------------------------------------------------------------------
def test_protocol_openai_makes_v1_speak_openai(tmp_path: Path, server: RunningEmulator) -> None:
    auth = {"Authorization": f"Bearer {EMULATOR_KEY}"}
    xai_id = httpx.post(f"{server.url}/batches", json={"name": "x"}, headers=auth).json()["batch_id"]
    assert httpx.post(f"{server.url}/batches/{xai_id}/cancel", headers=auth).status_code == 404
    switch = {"protocol": "openai", "openai_models": ["gpt-4o-mini"]}  # through the admin route
    httpx.post(f"http://{server.host}:{server.port}/_emulator/config", json=switch).raise_for_status()
    assert server.config.openai_models == frozenset({"gpt-4o-mini"})
    client = client_of(server, base_url=server.url)
    batch, _ = wait(client, submit(client, tmp_path, [request("a"), request("b")]))
    assert batch.status == "completed" and sorted(ids(read_lines(client, batch.output_file_id))) == ["a", "b"]
    for base in (server.url, server.openai_url):
        missing = httpx.post(f"{base}/batches/{batch.id}:cancel", headers=auth)
        assert missing.status_code == 404 and "error" in missing.json()
    assert client_of(server).batches.retrieve(batch.id).id == batch.id  # same records on both prefixes
    with pytest.raises(ValueError, match="protocol"):
        server.configure(protocol="gemini")


def test_files_are_shared_between_protocols(tmp_path: Path, server: RunningEmulator) -> None:
    path = tmp_path / "a.jsonl"
    path.write_text(json.dumps(request("a")) + "\n", encoding="utf-8")
    uploaded = client_of(server).files.create(file=path, purpose="batch")
    xai = client_of(server, base_url=server.url)
    assert xai.files.content(uploaded.id).read() == path.read_bytes()


def test_faults_and_auth_answer_in_openai_shape(tmp_path: Path, server: RunningEmulator) -> None:
    with pytest.raises(openai.AuthenticationError) as info:
        openai.OpenAI(base_url=server.openai_url, api_key="wrong-key-42", max_retries=0).batches.list()
    assert info.value.code == "invalid_api_key" and "wrong-key-42" not in str(info.value)
    server.configure(rate_429=1.0)
    limited = httpx.get(f"{server.openai_url}/batches", headers={"Authorization": f"Bearer {EMULATOR_KEY}"})
    assert limited.status_code == 429 and limited.headers["Retry-After"] == "0.01"
    assert limited.json()["error"]["code"] == "rate_limit_exceeded"


def test_sdk_survives_a_429_storm(tmp_path: Path, server: RunningEmulator) -> None:
    server.configure(rate_429=0.4, seed=7)
    client = client_of(server, max_retries=30)
    batch, _ = wait(client, submit(client, tmp_path, [request(f"r{i}") for i in range(10)]))
    assert batch.status == "completed" and len(read_lines(client, batch.output_file_id)) == 10
    assert sum(1 for entry in server.state.request_log if entry.status == 429) >= 5
    assert server.state.count("POST", "/openai/v1/batches", 200) == 1


def test_lost_create_reply_still_created_the_batch_once(tmp_path: Path, server: RunningEmulator) -> None:
    server.config.drop_after_create_rate = 1.0
    client = client_of(server, max_retries=0)
    with pytest.raises(openai.APIConnectionError):
        submit(client, tmp_path, [request("a")])
    assert (
        server.state.count("POST", "/openai/v1/batches", 200) == 1 and len(server.state.openai.batches) == 1
    )


def test_request_log_carries_clock_times(server: RunningEmulator) -> None:
    client = client_of(server)
    before = time.time()
    for _ in range(3):
        client.batches.list()
    times = server.state.times("GET", "/openai/v1/batches")
    assert len(times) == 3 == server.state.count("GET", "/openai/v1/batches", 200)
    assert before <= times[0] <= times[1] <= times[2] <= time.time()
    stats = httpx.get(f"http://{server.host}:{server.port}/_emulator/stats").json()
    assert [entry["time"] for entry in stats["requests"]] == times


# -- answers ----------------------------------------------------------------------------------
def test_openai_usage_counts_reasoning_inside_completion_tokens(server: RunningEmulator) -> None:
    body = {"model": REASONING_MODEL, "messages": [{"role": "user", "content": "great and sturdy"}]}
    openai_reply = client_of(server).chat.completions.create(**body)
    xai_reply = client_of(server, base_url=server.url).chat.completions.create(**body)
    o, x = openai_reply.usage, xai_reply.usage
    assert o is not None and x is not None and o.completion_tokens_details and x.completion_tokens_details
    reasoning = x.completion_tokens_details.reasoning_tokens or 0
    assert reasoning > 0 and o.completion_tokens_details.reasoning_tokens == reasoning
    assert o.completion_tokens == x.completion_tokens + reasoning
    assert o.prompt_tokens == x.prompt_tokens and o.total_tokens == x.total_tokens
    assert (x.model_extra or {}).get("cost_in_usd_ticks") and "cost_in_usd_ticks" not in (o.model_extra or {})
    assert openai_reply.choices[0].message.content == xai_reply.choices[0].message.content
    assert json.loads(chat_completion_json(body, 5, "openai")) == chat_completion(body, 5, "openai")


def structured_body(text: str, model: str = "gpt-4o-mini", **extra: Any) -> dict[str, Any]:
    messages = [{"role": "user", "content": text}]
    return {"model": model, "messages": messages, "response_format": JSON_SCHEMA_FORMAT, **extra}


TEXTS = [
    "I love it, works great",
    "It broke, terrible",
    "It is a chair",
    "Fast and comfortable",
    "late, refund",
]


def test_structured_answers_fit_the_schema_sync_and_batch(tmp_path: Path, server: RunningEmulator) -> None:
    client = client_of(server)
    bodies = [structured_body(text) for text in TEXTS]
    for body in bodies:
        content = client.chat.completions.create(**body).choices[0].message.content or ""
        answer = json.loads(content)
        jsonschema.validate(answer, SCHEMA)
        assert answer == structured_answer(body) and content == expected_answer(body)
        assert answer["sentiment"] in ("positive", "negative", "neutral") and 1 <= answer["stars"] <= 10
    assert [structured_answer(b)["sentiment"] for b in bodies[:3]] == ["positive", "negative", "neutral"]
    assert structured_answer({"messages": [], "model": "m"}) is None
    plain = {
        "model": "m",
        "messages": [{"role": "user", "content": "hi"}],
        "response_format": {"type": "json_object"},
    }
    assert json.loads(
        client.chat.completions.create(**plain).choices[0].message.content or ""
    ) == structured_answer(plain)
    lines = [{**request(f"r{i}"), "body": body} for i, body in enumerate(bodies)]
    batch, _ = wait(client, submit(client, tmp_path, lines))
    for line in read_lines(client, batch.output_file_id):
        content = line["response"]["body"]["choices"][0]["message"]["content"]
        jsonschema.validate(json.loads(content), SCHEMA)
        assert content == expected_answer(bodies[int(line["custom_id"][1:])])


def test_invalid_output_rate_breaks_the_schema_the_same_way_in_batch_and_sync(
    tmp_path: Path, server: RunningEmulator
) -> None:
    server.configure(invalid_output_rate=1.0, seed=3)
    client = client_of(server)
    bodies = [structured_body(f"{text} #{i}") for i in range(3) for text in TEXTS]
    kinds = set()
    sync = []
    for body in bodies:
        choice = client.chat.completions.create(**body).choices[0]
        assert choice.finish_reason == "stop"
        content = choice.message.content or ""
        sync.append(content)
        try:
            answer = json.loads(content)
        except ValueError:
            kinds.add("prose")
            continue
        kinds.add("json")
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(answer, SCHEMA)
    assert kinds == {"prose", "json"}
    plain = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
    assert plain.choices[0].message.content == expected_answer(
        {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    )
    lines = [{**request(f"r{i}"), "body": body} for i, body in enumerate(bodies)]
    batch, _ = wait(client, submit(client, tmp_path, lines))
    for line in read_lines(client, batch.output_file_id):
        assert (
            line["response"]["body"]["choices"][0]["message"]["content"] == sync[int(line["custom_id"][1:])]
        )


def test_max_tokens_truncates_structured_answers(server: RunningEmulator) -> None:
    body = structured_body("I love it", max_tokens=4)
    choice = client_of(server).chat.completions.create(**body).choices[0]
    content = choice.message.content or ""
    assert choice.finish_reason == "length" and content == expected_answer(body)[:16]
    with pytest.raises(ValueError):
        json.loads(content)


def test_xai_results_carry_the_same_structured_and_broken_answers_as_sync(server: RunningEmulator) -> None:
    server.configure(invalid_output_rate=0.5, seed=5)
    auth = {"Authorization": f"Bearer {EMULATOR_KEY}"}
    bodies = [structured_body(f"{text} #{i}", model="grok-4.3") for i in range(2) for text in TEXTS]
    content = "".join(json.dumps({**request(f"r{i}"), "body": b}) + "\n" for i, b in enumerate(bodies))
    uploaded = httpx.post(f"{server.url}/files", files={"file": ("a.jsonl", content.encode())}, headers=auth)
    created = httpx.post(
        f"{server.url}/batches", json={"name": "s", "input_file_id": uploaded.json()["id"]}, headers=auth
    )
    batch_id = created.json()["batch_id"]
    for _ in range(200):
        page = httpx.get(
            f"{server.url}/batches/{batch_id}/results", params={"limit": 100}, headers=auth
        ).json()
        if len(page["results"]) == len(bodies):
            break
        time.sleep(0.02)
    xai = client_of(server, base_url=server.url)
    broken = 0
    for result in page["results"]:
        body = bodies[int(result["batch_request_id"][1:])]
        answer = result["batch_result"]["response"]["chat_get_completion"]["choices"][0]["message"]["content"]
        assert answer == xai.chat.completions.create(**body).choices[0].message.content
        broken += answer != expected_answer(body)
    assert 0 < broken < len(bodies)
