"""The emulator behaves like xAI's service (reference §8), seen through the real openai SDK."""

import itertools
import json
import time
from pathlib import Path

import httpx
import openai
import pytest

from emulator import EmulatorConfig, RunningEmulator
from emulator.completions import expected_answer
from tasks.infra.errors import ProviderError
from tasks.providers.base import BatchState
from tasks.providers.xai import XaiProvider
from tests.helpers import EMULATOR_KEY


def jsonl(path: Path, lines: list[dict]) -> Path:
    path.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    return path


def request(custom_id: str, text: str = "hello", model: str = "grok-4.3") -> dict:
    return {
        "custom_id": custom_id,
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"model": model, "messages": [{"role": "user", "content": text}]},
    }


def wait_for(provider: XaiProvider, batch_id: str, timeout_s: float = 10.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = provider.get_status(batch_id)
        if status.state.terminal:
            return status
        time.sleep(0.05)
    raise AssertionError("batch did not finish")


def test_counters_stay_zero_while_parsing_then_finish_gradually(tmp_path: Path) -> None:
    config = EmulatorConfig(api_key=EMULATOR_KEY, parse_delay_s=0.4, processing_s=0.8)
    with RunningEmulator(config) as server:
        provider = XaiProvider(server.url, api_key=EMULATOR_KEY)
        file_id = provider.upload(jsonl(tmp_path / "a.jsonl", [request(f"r{i}") for i in range(50)]))
        batch_id = provider.create_batch("b1", file_id)
        first = provider.get_status(batch_id)
        assert (first.state, first.total, first.pending) == (BatchState.VALIDATING, 0, 0)
        seen_partial = False
        for _ in range(200):
            status = provider.get_status(batch_id)
            seen_partial |= status.state == BatchState.RUNNING and 0 < status.succeeded < 50
            if status.state == BatchState.DONE:
                break
            time.sleep(0.02)
        assert seen_partial and status.succeeded == 50


def test_results_are_shuffled_paginated_and_deterministic(tmp_path: Path, emulator: RunningEmulator) -> None:
    provider = XaiProvider()
    lines = [request(f"r{i:04d}", text=f"text {i}") for i in range(2500)]
    batch_id = provider.create_batch("b", provider.upload(jsonl(tmp_path / "a.jsonl", lines)))
    assert wait_for(provider, batch_id).state == BatchState.DONE
    pages = list(provider.iter_results(batch_id))
    assert [len(p) for p in pages] == [1000, 1000, 500]
    ids = [r["custom_id"] for page in pages for r in page]
    assert sorted(ids) == [line["custom_id"] for line in lines] and ids != sorted(ids)
    by_id = {r["custom_id"]: r for page in pages for r in page}
    for line in lines[:50]:
        assert by_id[line["custom_id"]]["response"] == expected_answer(line["body"])


@pytest.mark.parametrize("last_token", [None, ""])
def test_last_page_token_null_or_empty_ends_paging(
    tmp_path: Path, emulator: RunningEmulator, last_token
) -> None:
    emulator.config.last_page_token = last_token
    provider = XaiProvider()
    batch_id = provider.create_batch("b", provider.upload(jsonl(tmp_path / "a.jsonl", [request("x")])))
    wait_for(provider, batch_id)
    assert [r["custom_id"] for page in provider.iter_results(batch_id) for r in page] == ["x"]


@pytest.mark.parametrize(
    ("lines", "reason"),
    [
        ([request("a", model="grok-4.5")], "Model grok-4.5 is not supported for batch processing."),
        ([request("a"), request("a")], "duplicate custom_id 'a'"),
        (
            [request("a"), {"custom_id": "b", "method": "GET", "url": "/v1/chat/completions", "body": {}}],
            "line 2",
        ),
        ([request(f"r{i}") for i in range(11)], "11 requests exceed the maximum of 10"),
    ],
)
def test_invalid_files_are_rejected_silently_with_only_a_message(
    tmp_path: Path, emulator: RunningEmulator, lines: list[dict], reason: str
) -> None:
    emulator.config.max_lines = 10
    provider = XaiProvider()
    batch_id = provider.create_batch("b", provider.upload(jsonl(tmp_path / "a.jsonl", lines)))
    status = wait_for(provider, batch_id)
    assert status.state == BatchState.REJECTED and status.total == 0
    assert status.message is not None and status.message.startswith("JSONL file validation failed")
    assert reason in status.message


def test_cancel_keeps_finished_results(tmp_path: Path, emulator: RunningEmulator) -> None:
    emulator.config.processing_s = 2.0
    provider = XaiProvider()
    batch_id = provider.create_batch(
        "b", provider.upload(jsonl(tmp_path / "a.jsonl", [request(f"r{i}") for i in range(40)]))
    )
    while provider.get_status(batch_id).succeeded < 5:
        time.sleep(0.02)
    provider.cancel(batch_id)
    status = provider.get_status(batch_id)
    assert status.state == BatchState.CANCELLED
    assert status.cancelled > 0 and status.succeeded + status.cancelled == 40
    kept = [r for page in provider.iter_results(batch_id) for r in page]
    assert len(kept) == status.succeeded


def test_expiry_leaves_pending_requests_and_keeps_results(tmp_path: Path, emulator: RunningEmulator) -> None:
    emulator.config.processing_s = 4.0
    emulator.config.expire_after_s = 1.0
    provider = XaiProvider()
    batch_id = provider.create_batch(
        "b", provider.upload(jsonl(tmp_path / "a.jsonl", [request(f"r{i}") for i in range(20)]))
    )
    status = wait_for(provider, batch_id)
    assert status.state == BatchState.EXPIRED and 0 < status.pending < 20
    assert len([r for page in provider.iter_results(batch_id) for r in page]) == 20 - status.pending


def test_string_error_shape_and_failing_requests(tmp_path: Path, emulator: RunningEmulator) -> None:
    emulator.config.fail_rate = 0.5
    emulator.config.error_shape = "string"
    provider = XaiProvider()
    batch_id = provider.create_batch(
        "b", provider.upload(jsonl(tmp_path / "a.jsonl", [request(f"r{i}") for i in range(40)]))
    )
    status = wait_for(provider, batch_id)
    records = [r for page in provider.iter_results(batch_id) for r in page]
    failed = [r for r in records if r["status"] == "failed"]
    assert len(failed) == status.failed > 0 and all(r["error"].startswith("Internal error") for r in failed)


def test_bearer_auth_is_enforced_and_key_not_echoed(tmp_path: Path, emulator: RunningEmulator) -> None:
    provider = XaiProvider(emulator.url, api_key="wrong-key-123")
    with pytest.raises(ProviderError, match="HTTP 401") as info:
        provider.get_status("batch_x")
    assert "wrong-key-123" not in str(info.value)


def test_fault_storm_is_absorbed_by_retries(tmp_path: Path, emulator: RunningEmulator) -> None:
    emulator.configure(rate_429=0.3, rate_500=0.1, drop_rate=0.05, seed=11)
    provider = XaiProvider(max_retries=12)
    batch_id = provider.create_batch(
        "storm", provider.upload(jsonl(tmp_path / "a.jsonl", [request(f"r{i}") for i in range(30)]))
    )
    assert wait_for(provider, batch_id, timeout_s=30).state == BatchState.DONE
    assert len([r for page in provider.iter_results(batch_id) for r in page]) == 30
    faults = [entry for entry in emulator.state.request_log if entry[2] in (0, 429, 500)]
    assert len(faults) >= 5  # the storm really happened
    assert emulator.state.count("POST", "/v1/batches", 200) == 1


def test_lost_create_reply_is_found_by_name_not_created_twice(
    tmp_path: Path, emulator: RunningEmulator
) -> None:
    emulator.config.drop_after_create_rate = 1.0
    provider = XaiProvider()
    file_id = provider.upload(jsonl(tmp_path / "a.jsonl", [request("x")]))
    batch_id = provider.create_batch("grok-batch-unique-name", file_id)
    assert emulator.state.count("POST", "/v1/batches", 200) == 1
    assert emulator.state.batches[batch_id].name == "grok-batch-unique-name"


def test_sync_chat_completions_through_the_openai_sdk(emulator: RunningEmulator) -> None:
    client = openai.OpenAI(base_url=emulator.url, api_key=EMULATOR_KEY)
    body = {"model": "grok-4-1-fast-reasoning", "messages": [{"role": "user", "content": "I love it"}]}
    reply = client.chat.completions.create(**body)
    assert reply.choices[0].message.content == expected_answer(body)
    assert reply.usage is not None and reply.usage.completion_tokens_details is not None
    assert reply.usage.completion_tokens_details.reasoning_tokens == 2 * reply.usage.completion_tokens


def test_files_routes_and_sealed_file_batches(tmp_path: Path, emulator: RunningEmulator) -> None:
    client = openai.OpenAI(base_url=emulator.url, api_key=EMULATOR_KEY)
    uploaded = client.files.create(file=jsonl(tmp_path / "a.jsonl", [request("x")]), purpose="batch")
    assert client.files.retrieve(uploaded.id).bytes == uploaded.bytes
    assert client.files.content(uploaded.id).read().startswith(b'{"custom_id"')
    headers = {"Authorization": f"Bearer {EMULATOR_KEY}"}
    created = httpx.post(
        f"{emulator.url}/batches", json={"name": "s", "input_file_id": uploaded.id}, headers=headers
    ).json()
    added = httpx.post(
        f"{emulator.url}/batches/{created['batch_id']}/requests", json={"batch_requests": []}, headers=headers
    )
    assert added.status_code == 400 and "sealed" in added.json()["error"]
    assert client.files.delete(uploaded.id).deleted


def test_batch_creation_stays_under_two_per_second(tmp_path: Path, emulator: RunningEmulator) -> None:
    provider = XaiProvider()
    file_id = provider.upload(jsonl(tmp_path / "a.jsonl", [request("x")]))
    ids = [provider.create_batch(f"rate-{i}", file_id) for i in range(4)]
    created = sorted(emulator.state.batches[i].created for i in ids)
    assert min(b - a for a, b in itertools.pairwise(created)) >= 0.5


def test_preformatted_completion_json_equals_the_dict_form() -> None:
    from emulator.completions import chat_completion, chat_completion_json

    for body in (
        {
            "model": "grok-4.3",
            "messages": [{"role": "system", "content": "Be brief"}, {"role": "user", "content": 'q "x"\nü'}],
        },
        {
            "model": "grok-4-1-fast-reasoning",
            "messages": [{"role": "user", "content": "love it"}],
            "max_tokens": 2,
        },
    ):
        assert json.loads(chat_completion_json(body, 123)) == chat_completion(body, 123)
