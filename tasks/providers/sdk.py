"""What every provider shares: an openai SDK client on the provider's base URL, error
mapping, uploads, and creating a batch exactly once.

The SDK retries 408/409/429/5xx and dropped connections with backoff that honours
Retry-After; batch creation is the exception (see `create_once`).
"""

from __future__ import annotations

import time
from abc import abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import openai
import orjson

from tasks.infra.errors import ProviderError
from tasks.infra.secrets import resolve_api_key
from tasks.providers.base import BatchProvider, BatchState, BatchStatus
from tasks.providers.completion import error_text
from tasks.spec.endpoints import Endpoint


class SdkProvider(BatchProvider):
    """What the providers share over the openai SDK; subclasses name their endpoint
    (spec.endpoints) and implement the protocol-specific calls."""

    endpoint: ClassVar[Endpoint]

    def __init__(
        self,
        base_url: str | None = None,
        *,
        api_key: str | None = None,
        max_retries: int = 8,
        timeout_s: float = 120.0,
        create_attempts: int = 8,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.base_url = self.endpoint.resolve(base_url)
        self.client = openai.OpenAI(
            base_url=self.base_url,
            api_key=api_key or resolve_api_key(self.endpoint.api_key_env, self.endpoint.secret_block),
            max_retries=max_retries,
            timeout=timeout_s,
        )
        self._create_attempts = create_attempts
        self._sleep = sleep

    def _call(
        self, what: str, request: Callable[[], Any], *, if_missing: Callable[[], Any] | None = None
    ) -> Any:
        """`request()`, with the SDK's errors as ProviderError; a 404 gives `if_missing()`
        instead when it is given (what the call names is gone, and that is an answer)."""
        try:
            return request()
        except openai.NotFoundError as exc:
            if if_missing is not None:
                return if_missing()
            raise ProviderError(f"{what} failed: HTTP {exc.status_code}: {status_text(exc)}") from None
        except openai.APIStatusError as exc:
            raise ProviderError(f"{what} failed: HTTP {exc.status_code}: {status_text(exc)}") from None
        except openai.APIConnectionError as exc:
            raise ProviderError(f"{what} failed: cannot reach {self.base_url} ({exc})") from None

    def _get(self, path: str, params: dict[str, Any] | None = None) -> Any:
        # Bytes + orjson: result pages are large, and the SDK's json decoding costs ~4x more.
        return orjson.loads(self.client.get(path, cast_to=bytes, options={"params": params or {}}))

    @abstractmethod
    def _list_one_batch(self) -> None:
        """List batches (one is enough): proof that this server speaks the protocol and
        accepts the key."""

    def gone(self, batch_id: str) -> BatchStatus:
        """The status of a batch the service answered 404 for: GONE (terminal; its rows go
        to the next round), once the batch listing answers too. A server that 404s every
        route (a wrong base URL, a proxy) raises instead, so no batch is given up for it."""
        self._call(f"batch {batch_id} is unknown (HTTP 404); listing batches", self._list_one_batch)
        return BatchStatus(
            batch_id=batch_id,
            state=BatchState.GONE,
            message="the service no longer knows this batch (HTTP 404): its results cannot be read",
        )

    def upload(self, shard_path: Path) -> str:
        with shard_path.open("rb") as handle:
            created = self._call(
                f"uploading {shard_path.name}",
                lambda: self.client.files.create(file=(shard_path.name, handle), purpose="batch"),
            )
        return str(created.id)

    def delete_file(self, file_id: str) -> None:
        """Stored files are billed for storage: the run drops its own once their batch is collected."""
        self._call(f"deleting file {file_id}", lambda: self.client.files.delete(file_id))

    def sync_client(self, timeout_s: float) -> openai.OpenAI:
        return self.client.with_options(max_retries=0, timeout=timeout_s)

    def create_once(
        self, name: str, post: Callable[[], str], throttle: Callable[[], None] | None = None
    ) -> str:
        """Create a batch once: a lost reply may hide a created batch, so look it up by
        name before every retry instead of letting the SDK resend the POST (`post` must
        send with max_retries=0)."""
        last_error = ""
        for attempt in range(self._create_attempts):
            if throttle is not None:
                throttle()
            try:
                return post()
            except (openai.APIConnectionError, openai.RateLimitError, openai.InternalServerError) as exc:
                last_error = status_text(exc) if isinstance(exc, openai.APIStatusError) else str(exc)
                self._sleep(retry_delay(exc, attempt))  # first: give a lagging listing time to show it
                found = self.find_batch(name)
                if found is not None:
                    return found
            except openai.APIStatusError as exc:
                raise ProviderError(
                    f"creating batch {name} failed: HTTP {exc.status_code}: {status_text(exc)}"
                ) from None
        raise ProviderError(f"creating batch {name} failed after {self._create_attempts} tries: {last_error}")


def status_text(exc: openai.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict):
        return error_text(body.get("error", body))[0]
    return str(body or exc.message)


# The transport errors (httpx's or httpx2's, whichever the SDK runs on) raised before a
# request can have left: no connection could be opened, or none was free in the pool.
_NEVER_SENT = frozenset({"ConnectError", "ConnectTimeout", "PoolTimeout"})


def never_sent(exc: openai.APIConnectionError) -> bool:
    """Whether a call that got no reply surely never reached the service (safe to send
    again). Anything else (a read error, a connection dropped or timing out after the
    request went out) may have been handled and billed: the reply is lost, not the call."""
    cause = exc.__cause__
    return cause is not None and any(kind.__name__ in _NEVER_SENT for kind in type(cause).__mro__)


def retry_delay(exc: Exception, attempt: int, cap_s: float = 8.0) -> float:
    """The service's Retry-After when it gives a sane one, else exponential backoff."""
    if isinstance(exc, openai.APIStatusError):
        header = exc.response.headers.get("retry-after")
        try:
            if header is not None and 0 <= float(header) <= 120:
                return float(header)
        except ValueError:
            pass
    return float(min(0.5 * 2**attempt, cap_s))
