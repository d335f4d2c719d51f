"""mode sync: a shard's requests through /v1/chat/completions, concurrently and paced.

Every answer is appended to the shard's journal (one JSON record per line, flushed) the
moment it arrives, so a rerun after a crash sends only the requests the journal lacks:
rows already answered are never paid for again. (A request in flight at the instant of
a hard kill may have been answered without being journaled; at most `concurrency` of
them, and no sync API offers an idempotency key to avoid it.)
When the shard is done, the journal becomes results/<batch>.parquet, exactly like a
collected batch, so reconcile, follow-up rounds and the join do not know the difference.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openai
import orjson

from tasks.infra.crashpoints import AFTER_SYNC_ANSWER, crashpoint
from tasks.infra.errors import ProviderError
from tasks.infra.ledger import Ledger
from tasks.infra.ratelimit import RateLimiter
from tasks.infra.records import FAILED
from tasks.infra.run_layout import RunPaths
from tasks.lifecycle import BatchState, Step
from tasks.money.estimate import answer_tokens
from tasks.providers.base import BatchProvider
from tasks.providers.completion import completion_fields
from tasks.providers.sdk import never_sent, retry_delay, status_text
from tasks.stages.collect import UNSENT_CANCELLED, AnswerCheck, write_results
from tasks.stages.prepare import BYTES_PER_TOKEN

_TRANSIENT = (openai.RateLimitError, openai.InternalServerError)  # answered: nothing was done
_FATAL = (openai.AuthenticationError, openai.PermissionDeniedError)  # every row would fail alike


@dataclass(frozen=True)
class SyncLimits:
    concurrency: int = 8
    requests_per_minute: int = 300
    tokens_per_minute: int = 1_000_000
    max_tries: int = 6
    max_retry_wait_s: float = 60.0
    timeout_s: float = 900.0


def estimated_tokens(line: bytes, body: dict[str, Any]) -> int:
    """The request line's size in tokens plus the answer budget: what a tokens-per-minute
    limit counts (the same rule as the estimate)."""
    return len(line) // BYTES_PER_TOKEN + answer_tokens(body)[0]


def read_journal(path: Path) -> dict[str, dict[str, Any]]:
    """custom_id -> record for every complete line; a line torn by a crash is ignored."""
    records: dict[str, dict[str, Any]] = {}
    if not path.exists():
        return records
    with path.open("rb") as handle:
        for line in handle:
            if not line.endswith(b"\n"):
                break  # the last write was cut short
            record = orjson.loads(line)
            records[record["custom_id"]] = record
    return records


def _requests(shard_path: Path) -> Iterator[tuple[bytes, dict[str, Any]]]:
    with shard_path.open("rb") as handle:
        for line in handle:
            if line.strip():
                yield line, orjson.loads(line)


class _Asker:
    """Sends one request with pacing and retries; returns its normalized record fields.
    Only a refused key escapes (every row would fail alike); anything else that goes
    wrong with one request becomes that row's failed record, so no paid answer is lost.

    Retried at once (with backoff): 429 and 5xx replies, and a request that never left (no
    connection could be opened). Never resent in the same round: a request that may have
    reached the service and whose reply was lost (the connection dropped or timed out after
    it was sent), because the service may have answered and billed it. Its row fails
    retryable and the next round sends it again, so every request reaching the service is
    either journaled or counted as one attempt of its row."""

    def __init__(self, provider: BatchProvider, limits: SyncLimits, limiter: RateLimiter) -> None:
        # Retries are paced here; a long read timeout, because a timed-out request may
        # still be answered and billed, and is not sent again within this round.
        self.client = provider.sync_client(limits.timeout_s)
        self.reasoning_in_completion = provider.capabilities.reasoning_in_completion
        self.limits, self.limiter = limits, limiter

    def __call__(self, line: bytes, request: dict[str, Any]) -> dict[str, Any]:
        try:
            return self._ask(request["body"], estimated_tokens(line, request["body"]))
        except ProviderError:
            raise
        except Exception as exc:  # a proxy's HTML page, a body that is not a completion, ...
            return _failed(f"unexpected reply: {type(exc).__name__}: {exc}", retryable=True)

    def _ask(self, body: dict[str, Any], tokens: int) -> dict[str, Any]:
        last_error = ""
        for attempt in range(self.limits.max_tries):
            self.limiter.acquire(tokens)
            try:
                reply = orjson.loads(self.client.post("/chat/completions", cast_to=bytes, body=body))
            except _FATAL as exc:
                raise ProviderError(
                    f"chat completion refused: HTTP {exc.status_code}: {status_text(exc)}"
                ) from None
            except openai.APIConnectionError as exc:
                if not never_sent(exc):  # it may have been answered and billed: next round, not now
                    return _failed(self._reply_lost(exc), retryable=True)
                last_error = f"cannot connect: {type(exc.__cause__).__name__}: {exc.__cause__}"
                time.sleep(retry_delay(exc, attempt, cap_s=self.limits.max_retry_wait_s))
                continue
            except _TRANSIENT as exc:
                last_error = status_text(exc) if isinstance(exc, openai.APIStatusError) else str(exc)
                delay = retry_delay(exc, attempt, cap_s=self.limits.max_retry_wait_s)
                if isinstance(exc, openai.RateLimitError):
                    self.limiter.pause(delay)  # the limit is shared: every worker waits
                else:
                    time.sleep(delay)
                continue
            except openai.APIStatusError as exc:  # 4xx: this request itself is refused
                return _failed(f"HTTP {exc.status_code}: {status_text(exc)}", retryable=False)
            if not isinstance(reply, dict) or not reply.get("choices"):
                return _failed(f"the reply holds no completion: {str(reply)[:200]}", retryable=True)
            return completion_fields(reply, reasoning_in_completion=self.reasoning_in_completion)
        return _failed(f"no answer after {self.limits.max_tries} tries: {last_error}", retryable=True)

    def _reply_lost(self, exc: openai.APIConnectionError) -> str:
        if isinstance(exc, openai.APITimeoutError):
            lost = f"no reply within {self.limits.timeout_s:.0f} s"
        else:
            cause = exc.__cause__ or exc
            lost = f"the connection was lost after the request was sent ({type(cause).__name__}: {cause})"
        return f"{lost}; the service may have answered (and billed) it: not sent again in this round"


def _failed(error: str, *, retryable: bool) -> dict[str, Any]:
    return {"status": FAILED, "error": error, "retryable": retryable}


def _trim_torn_tail(path: Path) -> None:
    """Cut a last line a crash left half written, so appends start on a line of their own."""
    if not path.exists() or path.stat().st_size == 0:
        return
    with path.open("rb+") as handle:
        data = handle.read()
        if not data.endswith(b"\n"):
            handle.truncate(data.rfind(b"\n") + 1)


def answer_shard(
    provider: BatchProvider,
    shard_path: Path,
    journal_path: Path,
    limits: SyncLimits,
    limiter: RateLimiter,
    *,
    heartbeat: Callable[[int], bool],
    heartbeat_s: float = 5.0,
    budget_s: float | None = None,
) -> bool:
    """Answer the shard's requests that the journal lacks. `heartbeat(answered)` runs every
    few seconds and returns False to stop sending (the run was cancelled). Returns True
    when every request of the shard has its record, False when stopped or out of budget."""
    _trim_torn_tail(journal_path)
    answered = set(read_journal(journal_path))
    ask = _Asker(provider, limits, limiter)
    started = last_beat = time.monotonic()
    stopped = exhausted = False
    pending: dict[Future[dict[str, Any]], str] = {}
    todo = ((line, req) for line, req in _requests(shard_path) if req["custom_id"] not in answered)
    with journal_path.open("ab") as journal, ThreadPoolExecutor(limits.concurrency, "sync") as pool:

        def record(future: Future[dict[str, Any]]) -> None:
            custom_id = pending.pop(future)
            journal.write(orjson.dumps({"custom_id": custom_id, **future.result()}) + b"\n")
            journal.flush()  # in the OS's hands: survives a killed process
            answered.add(custom_id)

        try:
            while True:
                while not stopped and not exhausted and len(pending) < 2 * limits.concurrency:
                    item = next(todo, None)
                    if item is None:
                        exhausted = True
                        break
                    pending[pool.submit(ask, *item)] = item[1]["custom_id"]
                if not pending:
                    break
                done, _ = wait(pending, timeout=1.0, return_when=FIRST_COMPLETED)
                for future in done:
                    record(future)
                    crashpoint(AFTER_SYNC_ANSWER)
                now = time.monotonic()
                if now - last_beat >= heartbeat_s:
                    last_beat = now
                    stopped = stopped or not heartbeat(len(answered))
                if budget_s is not None and now - started >= budget_s:
                    stopped = True
                if stopped:  # queued requests are not sent; those in flight are awaited
                    for future in [f for f in pending if f.cancel()]:
                        del pending[future]
        except BaseException:
            _journal_what_finished(pending, record)
            raise
    heartbeat(len(answered))
    return exhausted and not pending


def _journal_what_finished(
    pending: dict[Future[dict[str, Any]], str], record: Callable[[Future[dict[str, Any]]], None]
) -> None:
    """On the way out with an error: nothing more is sent, and every answer already paid
    for is journaled (the rerun sends only the rest)."""
    for future in [f for f in pending if f.cancel()]:
        del pending[future]
    wait(list(pending))
    for future in list(pending):
        if future.exception() is None:
            record(future)
        else:
            del pending[future]


def answer_planned(
    ledger: Ledger,
    provider: BatchProvider,
    run_key: str,
    paths: RunPaths,
    limits: SyncLimits,
    *,
    check: AnswerCheck | None = None,
    budget_s: float | None = None,
) -> int:
    """The sync stage: answer every shard not yet collected, in order, within `budget_s`
    (so a driver can show progress between calls). Returns the shards completed."""
    limiter = RateLimiter(limits.requests_per_minute, limits.tokens_per_minute)
    started = time.monotonic()
    completed = 0
    for row in ledger.batches(run_key):
        if row.step == Step.COLLECTED:
            continue
        remaining = None if budget_s is None else budget_s - (time.monotonic() - started)
        if remaining is not None and remaining <= 0:
            break
        ledger.renew(run_key)
        ledger.update_batch(row.batch_name, step=Step.ANSWERING, state=BatchState.RUNNING)
        journal = paths.journal(row.batch_name)
        journal.parent.mkdir(parents=True, exist_ok=True)

        def heartbeat(answered: int, name: str = row.batch_name) -> bool:
            ledger.renew(run_key)  # also stops us if another driver took over
            ledger.update_batch(name, finished=answered)
            return not ledger.cancel_requested(run_key)

        try:
            complete = not ledger.cancel_requested(run_key) and answer_shard(
                provider,
                paths.shard_file(row.shard_path),
                journal,
                limits,
                limiter,
                heartbeat=heartbeat,
                budget_s=remaining,
            )
        finally:  # answers paid for survive this machine (data on a store), an error included
            paths.publish(journal)
        if not complete and not ledger.cancel_requested(run_key):
            break  # out of budget: the next call goes on from the journal
        # Complete, or cancelled (before or during the shard): rows never answered end cancelled.
        outcome = BatchState.DONE if complete else BatchState.CANCELLED
        missing = (FAILED, "no answer was recorded for this request", True) if complete else UNSENT_CANCELLED
        write_results(paths, row, [list(read_journal(journal).values())], missing, check)
        paths.publish(paths.results(row.batch_name))
        ledger.update_batch(row.batch_name, step=Step.COLLECTED, state=outcome, finished=row.lines)
        completed += 1
    return completed
