"""This machine's working copies of places on a store.

Anything a user names by URL (s3://bkt/grok as the data root, s3://bkt/in/reviews.csv as an
input, s3://bkt/out/reviews.parquet as an output) is worked on through a local path that
stands for it: `<work dir>/store/<scheme>/<bucket>/<key>`. The mapping is structural, so a
path alone says which URL it stands for (`url_for`), in any process on the machine. The
store holds what must survive; a working copy is a cache any worker may lose: inputs are
streamed down once (a run reads its input several times: hash, check, prepare, join), run
files are published up as they are finished, outputs and reports are uploaded when written.

The work dir is $GROK_BATCH_WORK_DIR, else ~/.cache/grok-batch.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from tasks.infra.urls import is_remote, plain_path, scheme_of

if TYPE_CHECKING:
    from tasks.infra.storage import Location

# storage (pyarrow.fs) is imported where a URL is met: a command on local files never loads it.

WORK_DIR_ENV = "GROK_BATCH_WORK_DIR"


def work_dir() -> Path:
    return Path(os.environ.get(WORK_DIR_ENV) or Path.home() / ".cache" / "grok-batch").expanduser().absolute()


def _stores() -> Path:
    return work_dir() / "store"


def local_for(target: str | Path) -> Path:
    """The path this machine works on for `target`: a plain path is itself; a URL is its
    working copy under the work dir (nothing is fetched here)."""
    text = str(target)
    if not is_remote(text):
        return plain_path(text)
    scheme = scheme_of(text)
    return _stores().joinpath(scheme, *[part for part in text[len(scheme) + 3 :].split("/") if part])


def store_for(path: Path) -> Location | None:
    """The store location a working copy stands for; None for a path of this disk's own."""
    try:
        relative = path.absolute().relative_to(_stores())
    except ValueError:
        return None
    parts = relative.parts
    if len(parts) < 2:
        return None
    from tasks.infra.storage import locate

    return locate(f"{parts[0]}://{'/'.join(parts[1:])}")


def url_for(path: Path | str) -> str:
    """How a user, a message, the ledger or another machine names `path`: its store URL for a
    working copy, else the path itself."""
    if is_remote(str(path)):
        return str(path)
    store = store_for(Path(path))
    return store.url if store else str(path)


def fetch(target: str | Path) -> Path:
    """A readable local file for `target`: a path as it is; an object streamed into its
    working copy unless the copy there is already this object (same size, not older)."""
    if not is_remote(str(target)):
        return plain_path(target)
    from tasks.infra.storage import locate

    remote = locate(str(target))
    info = remote.info()
    local = local_for(remote.url)
    if info.type.name == "NotFound":
        local.unlink(missing_ok=True)  # a copy of an object that is gone would be read as it
        return local
    if info.type.name != "File":
        return local
    fresh = local.is_file() and local.stat().st_size == info.size
    if fresh and info.mtime is not None:
        fresh = local.stat().st_mtime >= info.mtime.timestamp()
    if not fresh:
        remote.download(local)
    return local


def pull_tree(folder: Path) -> int:
    """Fetch the files of the store folder `folder` stands for that this machine lacks, or holds
    shorter (a journal another worker added to); returns how many came down. A folder of this
    disk's own: nothing to do."""
    store = store_for(folder)
    if store is None:
        return 0
    fetched = 0
    for remote, info in store.files(recursive=True):
        local = folder.joinpath(*remote.path[len(store.path) :].strip("/").split("/"))
        if not local.is_file() or local.stat().st_size < (info.size or 0):
            remote.download(local)
            fetched += 1
    return fetched


def push_tree(folder: Path, *finished: Path, replace: bool = True) -> int:
    """Upload these files under the working copy `folder` (a folder among them: every file in
    it) unless the store holds them at the same size (or at all, when not `replace`); returns
    how many went up."""
    store = store_for(folder)
    if store is None:
        return 0
    known = {remote.path: info.size for remote, info in store.files(recursive=True)}
    sent = 0
    for item in finished:
        for local in sorted(item.rglob("*")) if item.is_dir() else [item]:
            if not local.is_file() or local.name.endswith(".partial"):
                continue
            remote = store.child(*local.relative_to(folder).parts)
            if remote.path not in known or (replace and known[remote.path] != local.stat().st_size):
                remote.upload(local)
                sent += 1
    return sent
