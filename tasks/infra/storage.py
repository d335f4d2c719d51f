"""One filesystem layer for every place a user or a run names: pyarrow.fs.

A path or URL (`reviews.csv`, `file:///data/x.csv`, `s3://bucket/x.parquet`, `gs://…`,
`abfs://…`) becomes a `Location`: a pyarrow FileSystem and a path in it. pyarrow.fs, not
fsspec, because Arrow's readers and writers take its files natively (no Python buffering
between the store and the Parquet/CSV reader), its S3 client streams multipart uploads in C++,
and it is already a core dependency; a scheme pyarrow does not know is served by an fsspec
implementation through pyarrow's FSSpecHandler when one is installed (az:// with adlfs).

Credentials are the standard ones (AWS_* variables and profiles, AWS_ENDPOINT_URL for an
S3-compatible store; GOOGLE_APPLICATION_CREDENTIALS; Azure's), or a Prefect Secret block named
by GROK_BATCH_STORAGE_BLOCK holding JSON {"access_key", "secret_key", "session_token",
"endpoint_url", "region"}. They never reach a message: errors name the URL and say what failed.
"""

from __future__ import annotations

import json
import os
import posixpath
import re
import tempfile
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs

from tasks.infra.errors import StorageError as StorageError
from tasks.infra.urls import is_remote as is_remote
from tasks.infra.urls import refuse_broken, scheme_of

STORAGE_BLOCK_ENV = "GROK_BATCH_STORAGE_BLOCK"
_KNOWN = "a path, file://, s3://, gs:// or abfs://"
COPY_CHUNK = 8 << 20  # bytes moved at a time between a store and a local file


@dataclass(frozen=True)
class Location:
    """A file or folder in some filesystem: `url` as shown to users, `path` as `fs` takes it."""

    url: str
    path: str
    fs: pafs.FileSystem = field(compare=False, repr=False)

    @property
    def remote(self) -> bool:
        return not isinstance(self.fs, pafs.LocalFileSystem)

    @property
    def local_path(self) -> Path:
        if self.remote:
            raise ValueError(f"{self.url} is not on this machine's disk")
        return Path(self.path)

    @property
    def name(self) -> str:
        return posixpath.basename(self.path.rstrip("/"))

    def __str__(self) -> str:
        return self.url

    def child(self, *parts: str) -> Location:
        tail = "/".join(p.strip("/") for p in parts if p)
        if not self.remote:
            path = str(Path(self.path, *[p for p in parts if p]))
            return Location(path, path, self.fs)
        return Location(f"{self.url.rstrip('/')}/{tail}", f"{self.path.rstrip('/')}/{tail}", self.fs)

    @property
    def parent(self) -> Location:
        if not self.remote:
            path = str(Path(self.path).parent)
            return Location(path, path, self.fs)
        url = self.url.rstrip("/").rsplit("/", 1)[0]
        return Location(url, posixpath.dirname(self.path.rstrip("/")), self.fs)

    def with_name(self, name: str) -> Location:
        return self.parent.child(name)

    # -- what is there --------------------------------------------------------------------
    def info(self) -> pafs.FileInfo:
        with storage_errors(self.url, "read"):
            return self.fs.get_file_info(self.path)

    def exists(self) -> bool:
        return self.info().type != pafs.FileType.NotFound

    def is_file(self) -> bool:
        return self.info().type == pafs.FileType.File

    def is_dir(self) -> bool:
        return self.info().type == pafs.FileType.Directory

    def files(self, recursive: bool = False) -> list[tuple[Location, pafs.FileInfo]]:
        """The files in this folder (none when it does not exist), by name."""
        with storage_errors(self.url, "list"):
            selector = pafs.FileSelector(self.path, allow_not_found=True, recursive=recursive)
            found = self.fs.get_file_info(selector)
        files = [info for info in found if info.type == pafs.FileType.File]
        if not files and self._bucket_missing():
            raise StorageError(f"{self.url}: cannot list it: the bucket does not exist")
        return sorted(((self._at(info.path), info) for info in files), key=lambda pair: pair[0].path)

    def _bucket_missing(self) -> bool:
        """Whether this remote location's bucket is absent (a store answers "not found" alike for
        an object and for a whole bucket; only this tells them apart)."""
        if not self.remote:
            return False
        bucket = self.path.split("/", 1)[0]
        with storage_errors(self.url, "read"):
            return self.fs.get_file_info(bucket).type == pafs.FileType.NotFound

    def _at(self, path: str) -> Location:
        relative = posixpath.relpath(path, self.path) if self.remote else os.path.relpath(path, self.path)
        return self.child(*relative.replace(os.sep, "/").split("/"))

    # -- reading and writing --------------------------------------------------------------
    @contextmanager
    def open_read(self) -> Iterator[pa.NativeFile]:
        with storage_errors(self.url, "read"):
            try:
                stream = self.fs.open_input_file(self.path)
            except FileNotFoundError:
                if self._bucket_missing():
                    raise StorageError(f"{self.url}: cannot read it: the bucket does not exist") from None
                raise
        try:
            yield stream
        finally:
            stream.close()

    def read_bytes(self) -> bytes:
        with self.open_read() as stream, storage_errors(self.url, "read"):
            return bytes(stream.read())

    def read_text(self) -> str:
        return self.read_bytes().decode("utf-8")

    @contextmanager
    def open_write(self) -> Iterator[pa.NativeFile]:
        """A stream whose bytes appear at this location only when it closes without error: on
        disk a temporary file beside the target is renamed over it; for an object store they
        go to a local temporary file, uploaded on success. (pyarrow cannot abort an upload:
        closing its stream, even after an error, publishes what was written.)"""
        if self.remote:
            with tempfile.TemporaryDirectory(prefix="grok-batch-upload-") as folder:
                spool = Path(folder, self.name or "object")
                with pa.OSFile(str(spool), "wb") as stream:
                    yield stream
                self._send(spool)
            return
        partial = f"{self.path}.{uuid.uuid4().hex[:8]}.partial"
        with storage_errors(self.url, "write"):
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            stream = self.fs.open_output_stream(partial)
        try:
            yield stream
        except BaseException:
            with suppress(Exception):
                stream.close()
            Path(partial).unlink(missing_ok=True)
            raise
        with storage_errors(self.url, "write"):
            stream.close()
            os.replace(partial, self.path)

    def write_bytes(self, data: bytes) -> None:
        with self.open_write() as stream, storage_errors(self.url, "write"):
            stream.write(data)

    def write_text(self, text: str) -> None:
        self.write_bytes(text.encode("utf-8"))

    def upload(self, local: Path) -> None:
        """Stream a local file here (never whole in memory)."""
        if self.remote:
            self._send(local)
            return
        with local.open("rb") as source, self.open_write() as target, storage_errors(self.url, "write"):
            while chunk := source.read(COPY_CHUNK):
                target.write(chunk)

    def _send(self, local: Path) -> None:
        """Upload a finished local file straight to this remote location."""
        with (
            local.open("rb") as source,
            storage_errors(self.url, "write"),
            self.fs.open_output_stream(self.path) as target,
        ):
            while chunk := source.read(COPY_CHUNK):
                target.write(chunk)

    def download(self, local: Path) -> Path:
        """Stream this file to `local` (atomically: a reader never sees half of it)."""
        local.parent.mkdir(parents=True, exist_ok=True)
        partial = local.with_name(f"{local.name}.{uuid.uuid4().hex[:8]}.partial")
        try:
            with self.open_read() as source, partial.open("wb") as target, storage_errors(self.url, "read"):
                while chunk := source.read(COPY_CHUNK):
                    target.write(chunk)
            os.replace(partial, local)
        finally:
            partial.unlink(missing_ok=True)
        return local

    def delete(self) -> None:
        with storage_errors(self.url, "delete"), suppress(FileNotFoundError):
            self.fs.delete_file(self.path)

    def move_to(self, target: Location) -> Location:
        """Rename on disk; copy then delete on an object store (which has no rename)."""
        with storage_errors(self.url, "move"):
            if not self.remote and not target.remote:
                Path(target.path).parent.mkdir(parents=True, exist_ok=True)
                os.replace(self.path, target.path)
            else:
                pafs.copy_files(self.path, target.path, self.fs, target.fs)
                self.fs.delete_file(self.path)
        return target

    def probe_write(self) -> None:
        """Write and delete a small object beside this location, so a denied write or a missing
        bucket is found before anything is paid for."""
        probe = self.with_name(f".grok-batch-probe-{uuid.uuid4().hex[:8]}")
        try:
            probe.write_bytes(b"")
            probe.delete()
        except StorageError as exc:  # name the place the user gave, not the probe beside it
            raise StorageError(str(exc).replace(probe.url, self.url, 1)) from None


# -- naming a location ----------------------------------------------------------------------
_LOCAL = pafs.LocalFileSystem()
_filesystems: dict[tuple[str, str], pafs.FileSystem] = {}  # by scheme, then block|endpoint|identity
_lock = threading.Lock()


def locate(target: str | Path | Location) -> Location:
    """The Location a path or URL names; a typo'd scheme is refused naming it."""
    if isinstance(target, Location):
        return target
    text = str(target)
    if text.startswith("file://"):
        text = text.removeprefix("file://")
    elif text.startswith("file:/"):
        text = text.removeprefix("file:")
    refuse_broken(text)
    scheme = scheme_of(text)
    if not scheme:
        path = str(Path(text).expanduser())
        return Location(path, path, _LOCAL)
    rest = text[len(scheme) + 3 :]
    bucket = rest.split("/", 1)[0]
    if not bucket:
        raise StorageError(f"{text}: no bucket named (write {scheme}://BUCKET/path)")
    return Location(text.rstrip("/"), rest.rstrip("/"), _fs_for(scheme, text))


def _fs_for(scheme: str, url: str) -> pafs.FileSystem:
    block = os.environ.get(STORAGE_BLOCK_ENV, "")
    with _lock:
        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL", "")
        # who is asking too: a filesystem holds the credentials it was made with (key id, not secret)
        identity = f"{os.environ.get('AWS_ACCESS_KEY_ID', '')}|{os.environ.get('AWS_PROFILE', '')}"
        key = (scheme, f"{block}|{endpoint}|{identity}")
        if key not in _filesystems:
            _filesystems[key] = _new_fs(scheme, url, block)
        return _filesystems[key]


def _new_fs(scheme: str, url: str, block: str) -> pafs.FileSystem:
    if scheme in ("s3", "s3a"):
        options: dict[str, Any] = {"connect_timeout": 5.0, "request_timeout": 60.0}
        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
        if block:
            secret = _storage_secret(block)
            options |= {"access_key": secret.get("access_key"), "secret_key": secret.get("secret_key")}
            options["session_token"] = secret.get("session_token")
            endpoint = secret.get("endpoint_url") or endpoint
            region = secret.get("region") or region
        if endpoint:
            options["endpoint_override"] = endpoint
        if region:
            options["region"] = region
        return pafs.S3FileSystem(**{k: v for k, v in options.items() if v is not None})
    try:
        return pafs.FileSystem.from_uri(url)[0]
    except (pa.ArrowInvalid, ValueError, OSError):
        pass
    try:
        import fsspec

        handler = pafs.FSSpecHandler(fsspec.filesystem(scheme))
        return pafs.PyFileSystem(handler)
    except (ImportError, ValueError):
        raise StorageError(f"{url}: unknown storage scheme {scheme + '://'!r}; use {_KNOWN}") from None


def _storage_secret(block: str) -> dict[str, str]:
    from tasks.infra.secrets import secret_object

    found = secret_object(block)
    if found is None or found == "":
        raise StorageError(f"{STORAGE_BLOCK_ENV} names the Prefect Secret block {block!r}; it was not found")
    if isinstance(found, str):  # saved as text holding JSON
        try:
            found = json.loads(found)
        except json.JSONDecodeError:
            raise StorageError(
                f"the Prefect Secret block {block!r} ({STORAGE_BLOCK_ENV}) is not JSON"
            ) from None
    if not isinstance(found, dict):
        raise StorageError(f"the Prefect Secret block {block!r} ({STORAGE_BLOCK_ENV}) is not a JSON object")
    return {str(k): str(v) for k, v in found.items() if v}


# -- errors a user can act on ----------------------------------------------------------------
@contextmanager
def storage_errors(url: str, verb: str) -> Iterator[None]:
    """Turn a filesystem failure into a StorageError naming the URL and what went wrong."""
    try:
        yield
    except StorageError:
        raise
    except FileNotFoundError:
        raise StorageError(f"{url}: no such file or object") from None
    except IsADirectoryError:
        raise StorageError(f"{url} is a folder, not a file") from None
    except PermissionError:
        raise StorageError(f"{url}: permission denied to {verb} it") from None
    except (OSError, pa.ArrowException) as exc:
        raise StorageError(f"{url}: cannot {verb} it: {_reason(str(exc))}") from None


def _reason(message: str) -> str:
    text = _scrub(message)
    # judge by what the store said, not by the key or bucket names the message quotes first
    # (a key like 'a403f.csv' or 'Timeout.csv' is not an answer)
    said = text.split("AWS Error", 1)[1] if "AWS Error" in text else text
    if re.search(r"ACCESS_DENIED|AccessDenied|HTTP status 403\b|\b403 Forbidden", said):
        return (
            "access denied (check the credentials: the AWS_* variables or profile, "
            f"or the block {STORAGE_BLOCK_ENV} names)"
        )
    bucket = re.search(r"[Bb]ucket '?([^' ]+)'? (?:not found|does not exist)|NoSuchBucket", said)
    if bucket or "NO_SUCH_BUCKET" in said:
        return "the bucket does not exist"
    if re.search(r"curlCode|[Cc]ould ?n[o']t connect|Connection refused|NETWORK_CONNECTION|Timeout", said):
        return "the storage service cannot be reached (check AWS_ENDPOINT_URL and the network)"
    return text.splitlines()[0] if text else "unknown error"


def _scrub(message: str) -> str:
    for name in ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_ACCESS_KEY_ID"):
        value = os.environ.get(name)
        if value:
            message = message.replace(value, "***")
    return message
