"""The storage layer (tasks/infra/storage.py) against a real S3 server (SeaweedFS), a plain path and
a file:// URL: the same calls behave the same on each; a bad storage input is a StorageError that
names the URL and never shows a credential."""

from __future__ import annotations

import hashlib
import os
import socket
from collections.abc import Callable
from pathlib import Path

import pytest

from tasks.infra import storage
from tasks.infra.storage import COPY_CHUNK, Location, StorageError, locate
from tests.s3_server import RunningS3

STORES = ["s3", "path", "file-url"]


@pytest.fixture(params=STORES)
def root(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A folder to work in, on the S3 server or on this disk."""
    if request.param == "s3":
        return str(request.getfixturevalue("s3_env"))
    folder = tmp_path / "store"
    return str(folder) if request.param == "path" else f"file://{folder}"


def names(found: list[tuple[Location, object]]) -> list[str]:
    return [location.name for location, _info in found]


def test_write_read_list_move_delete(root: str) -> None:
    base = locate(root)
    locate(f"{root}/in/a.txt").write_text("alpha")
    base.child("in", "b.csv").write_bytes(b"x,y\n1,2\n")
    base.child("in", "deeper", "c.txt").write_text("gamma")

    assert locate(f"{root}/in/a.txt").read_text() == "alpha"
    assert base.child("in/b.csv").read_bytes() == b"x,y\n1,2\n"
    assert base.child("in/a.txt").is_file() and base.child("in").is_dir()
    assert names(base.child("in").files()) == ["a.txt", "b.csv"]
    assert names(base.child("in").files(recursive=True)) == ["a.txt", "b.csv", "c.txt"]
    assert base.child("nothing-here").files() == []

    moved = base.child("in", "a.txt").move_to(base.child("done", "a.txt"))
    assert moved.read_text() == "alpha"
    assert not base.child("in", "a.txt").exists()
    assert names(base.child("in").files()) == ["b.csv"]

    moved.delete()
    moved.delete()  # deleting what is gone is no error
    assert not moved.exists()
    assert base.child("done", "a.txt").parent.files() == []


def test_a_failed_write_leaves_nothing_and_keeps_the_old_file(root: str) -> None:
    kept = locate(f"{root}/out/kept.csv")
    kept.write_text("old")
    fresh = locate(f"{root}/out/fresh.csv")

    for target in (kept, fresh):
        with pytest.raises(RuntimeError, match="the writer failed"), target.open_write() as stream:
            stream.write(b"half of a table " * 1000)
            raise RuntimeError("the writer failed")

    assert kept.read_text() == "old"
    assert not fresh.exists()
    assert names(locate(f"{root}/out").files()) == ["kept.csv"]  # no partial file beside them


def test_upload_and_download_a_file_of_several_chunks(root: str, tmp_path: Path) -> None:
    original = tmp_path / "big.bin"
    original.write_bytes(os.urandom(2 * COPY_CHUNK + 12345))
    remote = locate(f"{root}/bulk/big.bin")

    remote.upload(original)
    assert remote.info().size == original.stat().st_size
    copy = remote.download(tmp_path / "back" / "big.bin")

    assert hashlib.sha256(copy.read_bytes()).digest() == hashlib.sha256(original.read_bytes()).digest()
    assert sorted(p.name for p in copy.parent.iterdir()) == ["big.bin"]  # no partial left


def test_a_path_and_a_file_url_name_the_same_file(tmp_path: Path) -> None:
    locate(tmp_path / "same.txt").write_text("one file")
    assert locate(f"file://{tmp_path}/same.txt").read_text() == "one file"
    assert locate(f"file:{tmp_path}/same.txt").read_text() == "one file"
    assert not locate(f"file://{tmp_path}/same.txt").remote


# -- bad storage inputs -----------------------------------------------------------------------
def refusal(action: Callable[[], object], url: str, server: RunningS3) -> str:
    """The StorageError `action` raises: it names `url` and shows no secret."""
    with pytest.raises(StorageError) as caught:
        action()
    message = str(caught.value)
    assert url in message
    for who in (server.admin, server.reader):
        assert who.secret_key not in message and who.secret_key not in repr(caught.value)
    return message


def test_a_missing_object_is_named(s3_env: str, s3_server: RunningS3, tmp_path: Path) -> None:
    missing = locate(f"{s3_env}/no-such-table.csv")
    assert not missing.exists()
    assert "no such file" in refusal(missing.read_bytes, missing.url, s3_server)
    assert "no such file" in refusal(lambda: missing.download(tmp_path / "x.csv"), missing.url, s3_server)
    assert not (tmp_path / "x.csv").exists()


def test_a_wrong_bucket_is_named(s3_env: str, s3_server: RunningS3) -> None:
    wrong = f"s3://{s3_server.bucket}-typo/jobs/reviews.csv"
    where = locate(wrong)
    for action in (where.read_bytes, lambda: where.write_bytes(b"x"), where.probe_write):
        assert "bucket does not exist" in refusal(action, wrong, s3_server)
    folder = where.parent
    assert "bucket does not exist" in refusal(folder.files, folder.url, s3_server)


def test_a_denied_write_is_named(s3_env: str, s3_server: RunningS3, monkeypatch: pytest.MonkeyPatch) -> None:
    shared = locate(f"{s3_env}/shared.csv")
    shared.write_text("a,b\n")
    for name, value in s3_server.env(s3_server.reader).items():
        monkeypatch.setenv(name, value)

    as_reader = locate(f"{s3_env}/shared.csv")
    assert as_reader.read_text() == "a,b\n"  # the reader reads: only writing is refused
    output = locate(f"{s3_env}/out/result.parquet")
    refused = [
        (output.probe_write, output),
        (lambda: output.write_bytes(b"rows"), output),
        (as_reader.delete, as_reader),
    ]
    for action, where in refused:
        assert "denied" in refusal(action, where.url, s3_server)
    assert not output.exists() and as_reader.read_text() == "a,b\n"


def test_a_typed_scheme_is_refused_naming_it(
    s3_env: str, s3_server: RunningS3, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert "unknown storage scheme 's4://'" in refusal(
        lambda: locate(f"s4://{s3_server.bucket}/x.csv"), f"s4://{s3_server.bucket}/x.csv", s3_server
    )
    # one slash short: refused, not a local folder named "s3:" written in the working directory
    one_slash = f"s3:/{s3_server.bucket}/x.csv"
    assert "s3://BUCKET/path" in refusal(lambda: locate(one_slash).write_text("x"), one_slash, s3_server)
    assert "no bucket named" in refusal(lambda: locate("s3:///x.csv"), "s3:///x.csv", s3_server)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.timeout(60)  # an unreachable store must fail, not hang
def test_an_unreachable_endpoint_is_named(
    s3_env: str, s3_server: RunningS3, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed_port = sock.getsockname()[1]
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{closed_port}")
    target = locate(f"{s3_env}/table-403.csv")  # a 403 in a name is not a refusal
    for action in (target.read_bytes, target.probe_write, target.exists):
        assert "cannot be reached" in refusal(action, target.url, s3_server)


def test_credentials_from_a_prefect_secret_block(
    prefect_harness: None, s3_server: RunningS3, s3_env: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """GROK_BATCH_STORAGE_BLOCK names a Secret block holding the store's keys and endpoint: no
    AWS variable is needed, and a block that does not exist is named."""
    from prefect.blocks.system import Secret

    keys = {"access_key": s3_server.admin.access_key, "secret_key": s3_server.admin.secret_key}
    Secret(value={**keys, "endpoint_url": s3_server.endpoint}).save("grok-test-store", overwrite=True)
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(storage.STORAGE_BLOCK_ENV, "grok-test-store")
    place = locate(f"{s3_env}/from-a-block.txt")
    place.write_text("kept")
    assert place.read_text() == "kept"

    monkeypatch.setenv(storage.STORAGE_BLOCK_ENV, "no-such-block")
    with pytest.raises(StorageError, match="'no-such-block'; it was not found"):
        locate(f"{s3_env}/from-a-block.txt")
