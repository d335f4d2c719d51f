"""The analyst inbox: files dropped into a folder become runs; results land in the outbox.

inbox/name.csv (+ optional name.job.yaml, else inbox/default.job.yaml)
  -> claimed into processing/ once, once it has stopped changing
  -> outbox/name.parquet + outbox/name.report.md when the run finishes
  -> the input moves to archive/; a file that cannot be processed moves to failed/
     with name.error.md saying what to fix.

The folders are on this disk, or on a store when the data root (or the inbox) is a URL
(s3://bucket/grok/inbox, ...). As everywhere in grok-batch (tasks.infra.work_copies), a
folder or file on a store is named here by the local path that stands for it; what is on
the store is listed, read, moved and deleted through its storage Location. Two things a
disk gives and a store does not are made here:
- "settled": a dropped object's last-modified time, judged against the store's own clock
  (a probe object written beside it), never this machine's;
- exactly one claim: a rename on one disk is atomic, a copy and a delete on a store are not,
  so a claim that touches a store is made under a hold in the ledger's database, which every
  scanner on every machine shares.

Inbox job files are untrusted: they cannot choose where output goes.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path

from tasks.infra.errors import GrokBatchError, InputError, JobSpecError
from tasks.infra.ledger import Ledger
from tasks.infra.processes import holder_is_dead, this_holder
from tasks.infra.storage import Location, locate
from tasks.infra.table_io import file_sha256, split_table_name, table_suffix
from tasks.infra.work_copies import fetch, local_for, store_for, url_for
from tasks.spec.job import MAX_JOB_FILE_BYTES, JobSpec, build_job
from tasks.spec.template_check import check_template_in_child

DEFAULT_JOB_NAME = "default.job.yaml"
JOB_SUFFIX = ".job.yaml"


@dataclass(frozen=True)
class InboxLayout:
    """The folders of one inbox; all beside each other under the data directory (the inbox
    itself may be elsewhere). On a store, each is the local path standing for its URL."""

    inbox: Path
    processing: Path
    outbox: Path
    archive: Path
    failed: Path

    @classmethod
    def under(cls, data_dir: Path, inbox: str | Path | None = None) -> InboxLayout:
        """The folders under a data root (`data_root(...)`: a working copy when on a store);
        `inbox`, a path or URL, when the inbox is not DATA_DIR/inbox."""
        return cls(
            inbox=local_for(str(inbox)) if inbox else data_dir / "inbox",
            processing=data_dir / "processing",
            outbox=data_dir / "outbox",
            archive=data_dir / "archive",
            failed=data_dir / "failed",
        )

    def ensure(self) -> None:
        """Make the folders on this disk (a store has no folders: its objects name them)."""
        for folder in (self.inbox, self.processing, self.outbox, self.archive, self.failed):
            if not on_store(folder):
                folder.mkdir(parents=True, exist_ok=True)

    def holds(self, path: Path, folder: Path) -> bool:
        """True when `path` resolves inside `folder` (no `..`, no symlink escaping it)."""
        try:
            path.resolve().relative_to(folder.resolve())
        except ValueError:
            return False
        return True

    def is_claimed(self, recorded: str) -> bool:
        """Whether a run's input (as the ledger records it: a path or a URL) is a drop this
        inbox claimed, i.e. a file in processing/."""
        return local_for(recorded).parent.resolve() == self.processing.resolve()


@dataclass(frozen=True)
class Claimed:
    """A dropped file moved into processing/, with the job that goes with it."""

    name: str  # the name it was dropped with, e.g. reviews.csv
    path: Path  # where it is now (on a store: the working copy standing for it, fetched)
    sha256: str
    job: JobSpec


# -- where a file is ----------------------------------------------------------------------------
def on_store(path: Path) -> bool:
    """Whether `path` stands for an object on a store (a working copy) rather than itself."""
    return store_for(path) is not None


def _at(path: Path) -> Location:
    """The storage location `path` names: on the store for a working copy, else on this disk."""
    return store_for(path) or locate(path)


def exists(path: Path) -> bool:
    """Whether the file is there: on the store for a working copy, else on this disk."""
    return _at(path).exists() if on_store(path) else path.exists()


def named(path: Path) -> str:
    """How the ledger names a file of the inbox: its URL on a store, else its absolute path."""
    return url_for(path) if on_store(path) else str(path.resolve())


def _listing(folder: Path) -> dict[str, float]:
    """name -> last-modified time (s) of the files directly in `folder`; a link on this disk
    is listed as itself (claim refuses it), wherever it points."""
    store = store_for(folder)
    if store is None:
        if not folder.is_dir():
            return {}
        return {p.name: p.lstat().st_mtime for p in folder.iterdir() if p.is_symlink() or p.is_file()}
    return {loc.name: info.mtime.timestamp() for loc, info in store.files() if info.mtime is not None}


def _now_and_listing(folder: Path) -> tuple[float, dict[str, float]]:
    """The folder's listing and the moment it was taken, on the clock that stamped it: this
    machine's for a disk; for a store, its own (this machine's may be off), read as the
    last-modified time of a probe object written just before listing."""
    store = store_for(folder)
    if store is None:
        return time.time(), _listing(folder)
    probe = store.child(f".grok-batch-clock-{uuid.uuid4().hex[:12]}")
    probe.write_bytes(b"")
    try:
        listing = _listing(folder)
    finally:
        probe.delete()
    stamped = listing.pop(probe.name, None)
    if stamped is None:  # a listing that lags a write: the probe's own record (whole seconds)
        mtime = probe.info().mtime
        stamped = mtime.timestamp() if mtime is not None else time.time()
    return stamped, listing


def settled_tables(inbox: Path, settle_s: float, now: float | None = None) -> list[Path]:
    """Tables in the inbox that have not changed for `settle_s` seconds (still-growing
    files, or objects still being replaced, are left for a later scan). `now` on the clock
    of the folder's storage (the store's, for a store)."""
    if not any(_is_table(name) for name in _listing(inbox)):
        return []  # nothing to judge: an idle store is not written to
    moment, listing = _now_and_listing(inbox)
    moment = moment if now is None else now
    return [
        inbox / name
        for name, mtime in sorted(listing.items())
        if _is_table(name) and moment - mtime >= settle_s
    ]


def _is_table(name: str) -> bool:
    return not name.startswith(".") and table_suffix(name) is not None


# Anyone who can drop a file writes these jobs: nothing in them may choose where output
# goes, which file is read as the catalog, or which server receives the API key.
_OPERATOR_ONLY_FIELDS = {
    "output": "results always go to the outbox",
    "base_url": "the API key would be sent to that server; the service is set where grok-batch is served",
    "catalog": "prices and models come from the catalog the operator configured",
}


def job_for(table: Path, layout: InboxLayout) -> tuple[Path, JobSpec]:
    """name.job.yaml beside the table, else the inbox default; output is never the job's choice.
    The table's template check reads it on this disk (`claim` fetches a dropped object first)."""
    own = table.with_name(_stem(table.name) + JOB_SUFFIX)
    if own.name == DEFAULT_JOB_NAME:  # default.csv: the shared job is not its own to take away
        own = layout.inbox / ".no-own-job"
    job_file = own if exists(own) else layout.inbox / DEFAULT_JOB_NAME
    if not exists(job_file):
        raise JobSpecError(
            f"no job for {table.name}: drop {own.name} beside it, or put a {DEFAULT_JOB_NAME} in the inbox"
        )
    if job_file.is_symlink() or not layout.holds(job_file, layout.inbox):
        raise JobSpecError(f"job file {job_file.name} points outside the inbox; it is not used")
    job = _read_job(job_file)
    for field, why in _OPERATOR_ONLY_FIELDS.items():
        if getattr(job, field) is not None:
            raise JobSpecError(f"{job_file.name}: field `{field}` is not allowed in an inbox job; {why}")
    # An untrusted template first renders the table's first rows in a process that can be
    # killed (time and memory limits): one that hangs or blows up fails this drop alone.
    check_template_in_child(job.prompt, table, label=job_file.name, sheet=job.sheet)
    return own, job


def _read_job(job_file: Path) -> JobSpec:
    if not on_store(job_file):
        return build_job(job_file)
    url = url_for(job_file)
    size = _at(job_file).info().size or 0
    if size > MAX_JOB_FILE_BYTES:  # not fetched at all: a job file is a few lines
        raise JobSpecError(
            f"job file {url} is larger than {MAX_JOB_FILE_BYTES:,} bytes; a job file is a few lines"
        )
    try:
        return build_job(fetch(url))
    except JobSpecError as exc:  # named as the analyst knows it, not as this machine's copy
        raise JobSpecError(str(exc).replace(str(job_file), url)) from None


def claim(table: Path, layout: InboxLayout, ledger: Ledger | None = None) -> Claimed | None:
    """Move `table` (and its own job file) into processing/; None if another scanner took it
    first. On one disk the move is a rename (atomic: exactly one scanner wins); where a store
    is involved it is a copy and a delete, made under the drop's hold in `ledger` (required
    then) so that scanners on other machines wait their turn and find it gone."""
    if table.is_symlink():
        raise InputError(f"{table.name} is a symbolic link; drop the file itself (a link may point anywhere)")
    # On one disk a rename is the claim; a copy and a delete on a store are not atomic.
    atomic = not on_store(table) and not on_store(layout.processing)
    with nullcontext(True) if atomic else held(table, ledger) as ours:
        if not ours:
            return None  # another scanner is claiming it right now
        local = fetch(url_for(table))  # the drop itself, or this machine's copy of the object
        if not local.is_file():
            return None  # claimed by a scan before this one took its turn
        own_job, job = job_for(table, layout)
        try:
            sha = file_sha256(local)
        except FileNotFoundError:
            return None  # a scan running beside this one claimed it first
        stem, suffix = split_table_name(table.name)  # reviews.csv.gz -> reviews--<sha>.csv.gz
        target = layout.processing / f"{stem}--{sha[:12]}{suffix}"
        if not _take(table, local, target):
            return None
        _at(_claim_marker(target)).write_text(this_holder())  # who prepares it, till recorded
        if exists(own_job):
            _move(own_job, target.with_name(_stem(target.name) + JOB_SUFFIX))
    return Claimed(name=table.name, path=target, sha256=sha, job=job)


def _take(table: Path, local: Path, target: Path) -> bool:
    """Move the drop to its processing name; False when it was gone (taken meanwhile)."""
    if not on_store(table) and not on_store(target):
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.rename(table, target)  # atomic within one file system: exactly one scanner wins
        except FileNotFoundError:
            return False
        return True
    # The very bytes hashed go up (not a copy of what the drop holds by now), the copy here
    # becomes the claimed file's working copy (the run reads it without a second download),
    # then the drop goes. The hold keeps every other scanner out until then.
    if on_store(target):
        _at(target).upload(local)
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(local, target)
    os.utime(target)  # not older than the object it stands for: fetch takes it as current
    _at(table).delete()
    return True


def _move(source: Path, target: Path) -> None:
    """Move a file of the inbox folders, on this disk or a store; a working copy of a moved
    object is dropped (the object is what counts, and disk is not kept for it)."""
    if not on_store(source) and not on_store(target):
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(source, target)
        return
    _at(source).move_to(_at(target))
    if on_store(source):
        source.unlink(missing_ok=True)


def _claim_marker(processing_path: Path) -> Path:
    return processing_path.with_name(f".{processing_path.name}.claimed-by")


# A claim whose holder is on another machine is taken as dead after this long unrecorded
# (on this machine a dead holder is seen at once).
STRANDED_AFTER_S = 3600.0


def stranded(layout: InboxLayout, recorded: set[Path], now: float | None = None) -> list[Path]:
    """Claimed tables no run records (`recorded`: the inputs of runs, as local_for gives them)
    and no live scan is preparing: their scan was killed between the claim and the record, and
    nothing else would ever look at them again."""
    listing = _listing(layout.processing)
    if not any(_is_table(name) for name in listing):
        return []
    moment, listing = _now_and_listing(layout.processing)
    moment = moment if now is None else now
    known = {path.resolve() for path in recorded}
    found = []
    for name, mtime in sorted(listing.items()):
        path = layout.processing / name
        if not _is_table(name) or path.resolve() in known:
            continue
        marker = _claim_marker(path)
        holder = _at(marker).read_text().strip() if marker.name in listing else ""
        claimed_at = listing.get(marker.name, mtime)
        if holder_is_dead(holder) or moment - claimed_at > STRANDED_AFTER_S:
            found.append(path)
    return found


def return_to_inbox(processing_path: Path, layout: InboxLayout, ledger: Ledger | None = None) -> Path | None:
    """Put a stranded claim back where it was dropped (with its own job), for the next scan;
    None when another scanner put it back first. Where a store is involved, under the claim's
    hold in `ledger` (required then)."""
    atomic = not on_store(processing_path) and not on_store(layout.inbox)
    with nullcontext(True) if atomic else held(processing_path, ledger) as ours:
        if not ours or not exists(processing_path):
            return None
        name = dropped_name(processing_path)
        target = _free_path(layout.inbox, name)
        job = processing_path.with_name(_stem(processing_path.name) + JOB_SUFFIX)
        if exists(job):
            _move(job, _free_path(layout.inbox, _stem(target.name) + JOB_SUFFIX))
        _move(processing_path, target)
        _at(_claim_marker(processing_path)).delete()
    return target


def dropped_name(processing_path: Path) -> str:
    """reviews--0123456789ab.csv -> reviews.csv (reviews--0123456789ab.csv.gz -> reviews.csv.gz)"""
    named_as, suffix = split_table_name(processing_path.name)
    stem, _, _ = named_as.rpartition("--")
    return (stem or named_as) + suffix


def output_for(
    name: str, sha256: str, layout: InboxLayout, taken: set[Path] | frozenset[Path] = frozenset()
) -> Path:
    """outbox/name.parquet, or name--<sha>.parquet when another content holds or will hold
    that name (`taken`: the outputs of runs still open)."""
    stem = _stem(name)
    plain = layout.outbox / f"{stem}.parquet"
    if plain in taken or plain.resolve() in {p.resolve() for p in taken} or _at(plain).exists():
        return layout.outbox / f"{stem}--{sha256[:12]}.parquet"
    return plain


def _free_path(folder: Path, name: str) -> Path:
    candidate = folder / name
    stem, suffix = split_table_name(name)
    counter = 1
    while exists(candidate):
        candidate = folder / f"{stem}.{counter}{suffix}"
        counter += 1
    return candidate


def _stem(name: str) -> str:
    """A file name without its table suffix, compound ones whole: reviews.csv.gz -> reviews."""
    return split_table_name(name)[0]


def archive(processing_path: Path, layout: InboxLayout) -> Path:
    """Move a finished input (and its job file) to archive/, never over another file."""
    target = _free_path(layout.archive, processing_path.name)
    _move(processing_path, target)
    _at(_claim_marker(processing_path)).delete()
    job = processing_path.with_name(_stem(processing_path.name) + JOB_SUFFIX)
    if exists(job):
        _move(job, _free_path(layout.archive, job.name))
    return target


def fail(path: Path, error: Exception | str, layout: InboxLayout) -> Path:
    """Move a file that cannot be processed to failed/ with name.error.md explaining why."""
    claimed = path.parent.resolve() == layout.processing.resolve()
    name = dropped_name(path) if claimed else path.name
    target = _free_path(layout.failed, name)
    if exists(path):
        _move(path, target)
    _at(_claim_marker(path)).delete()
    job = path.with_name(_stem(path.name) + JOB_SUFFIX)  # beside it, in the inbox or in processing/
    if exists(job):
        _move(job, _free_path(layout.failed, _stem(name) + JOB_SUFFIX))
    message = str(error)
    kind = "The job or the file needs a fix" if isinstance(error, GrokBatchError) else "Unexpected error"
    note = (
        f"# {name} could not be processed\n\n{kind}:\n\n```\n{message}\n```\n\n"
        f"Fix it and drop the file into the inbox again ({url_for(layout.inbox)}).\n"
    )
    _at(target.with_name(_stem(target.name) + ".error.md")).write_text(note)
    return target


# -- one claim at a time, across machines ---------------------------------------------------------
# A hold on a drop, in the ledger's database (every scanner shares it): taken before the copy
# and the delete that claim an object, given back after. A holder that dies is taken over at
# once on its own machine, elsewhere when its hold runs out (a claim is a download, a template
# check and an upload: minutes at most).
CLAIM_HOLD_S = 900.0


@contextmanager
def held(path: Path, ledger: Ledger | None) -> Iterator[bool]:
    """The hold on a file of the inbox folders for the block: True when it is ours, False
    while another scanner has it."""
    if ledger is None:
        raise ValueError(f"moving {url_for(path)} on a store takes the ledger (a store has no atomic rename)")
    with ledger.hold(hashlib.sha256(url_for(path).encode("utf-8")).hexdigest(), CLAIM_HOLD_S) as ours:
        yield ours
