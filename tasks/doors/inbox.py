"""The analyst inbox: files dropped into a folder become runs; results land in the outbox.

inbox/name.csv (+ optional name.job.yaml, else inbox/default.job.yaml)
  -> claimed atomically into processing/ once it has stopped growing
  -> outbox/name.parquet + outbox/name.report.md when the run finishes
  -> the input moves to archive/; a file that cannot be processed moves to failed/
     with name.error.md saying what to fix.

Inbox job files are untrusted: they cannot choose where output goes.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from tasks.infra.errors import GrokBatchError, InputError, JobSpecError
from tasks.infra.processes import holder_is_dead, this_holder
from tasks.infra.table_io import file_sha256, split_table_name, table_suffix
from tasks.spec.job import JobSpec, build_job
from tasks.spec.template_check import check_template_in_child

DEFAULT_JOB_NAME = "default.job.yaml"
JOB_SUFFIX = ".job.yaml"


@dataclass(frozen=True)
class InboxLayout:
    """The folders of one inbox; all beside each other under the data directory."""

    inbox: Path
    processing: Path
    outbox: Path
    archive: Path
    failed: Path

    @classmethod
    def under(cls, data_dir: Path, inbox: Path | None = None) -> InboxLayout:
        return cls(
            inbox=inbox or data_dir / "inbox",
            processing=data_dir / "processing",
            outbox=data_dir / "outbox",
            archive=data_dir / "archive",
            failed=data_dir / "failed",
        )

    def ensure(self) -> None:
        for folder in (self.inbox, self.processing, self.outbox, self.archive, self.failed):
            folder.mkdir(parents=True, exist_ok=True)

    def holds(self, path: Path, folder: Path) -> bool:
        """True when `path` resolves inside `folder` (no `..`, no symlink escaping it)."""
        try:
            path.resolve().relative_to(folder.resolve())
        except ValueError:
            return False
        return True


@dataclass(frozen=True)
class Claimed:
    """A dropped file moved into processing/, with the job that goes with it."""

    name: str  # the name it was dropped with, e.g. reviews.csv
    path: Path  # where it is now
    sha256: str
    job: JobSpec


def settled_tables(inbox: Path, settle_s: float, now: float | None = None) -> list[Path]:
    """Tables in the inbox that have not changed for `settle_s` seconds (still-growing
    files are left for a later scan)."""
    if not inbox.is_dir():
        return []
    moment = time.time() if now is None else now
    found = []
    for path in sorted(inbox.iterdir()):
        if path.name.startswith(".") or table_suffix(path) is None:
            continue
        if not (path.is_symlink() or path.is_file()):
            continue
        stat = path.lstat()  # a link is judged (and refused in claim) as itself
        if moment - stat.st_mtime >= settle_s:
            found.append(path)
    return found


# Anyone who can drop a file writes these jobs: nothing in them may choose where output
# goes, which file is read as the catalog, or which server receives the API key.
_OPERATOR_ONLY_FIELDS = {
    "output": "results always go to the outbox",
    "base_url": "the API key would be sent to that server; the service is set where grok-batch is served",
    "catalog": "prices and models come from the catalog the operator configured",
}


def job_for(table: Path, layout: InboxLayout) -> tuple[Path, JobSpec]:
    """name.job.yaml beside the table, else the inbox default; output is never the job's choice."""
    own = table.with_name(_stem(table.name) + JOB_SUFFIX)
    if own.name == DEFAULT_JOB_NAME:  # default.csv: the shared job is not its own to take away
        own = layout.inbox / ".no-own-job"
    job_file = own if own.exists() else layout.inbox / DEFAULT_JOB_NAME
    if not job_file.exists():
        raise JobSpecError(
            f"no job for {table.name}: drop {own.name} beside it, or put a {DEFAULT_JOB_NAME} in the inbox"
        )
    if job_file.is_symlink() or not layout.holds(job_file, layout.inbox):
        raise JobSpecError(f"job file {job_file.name} points outside the inbox; it is not used")
    job = build_job(job_file)
    for field, why in _OPERATOR_ONLY_FIELDS.items():
        if getattr(job, field) is not None:
            raise JobSpecError(f"{job_file.name}: field `{field}` is not allowed in an inbox job; {why}")
    # An untrusted template first renders the table's first rows in a process that can be
    # killed (time and memory limits): one that hangs or blows up fails this drop alone.
    check_template_in_child(job.prompt, table, label=job_file.name, sheet=job.sheet)
    return own, job


def claim(table: Path, layout: InboxLayout) -> Claimed | None:
    """Move `table` (and its own job file) into processing/ atomically; None if another
    scanner took it first."""
    if table.is_symlink():
        raise InputError(f"{table.name} is a symbolic link; drop the file itself (a link may point anywhere)")
    own_job, job = job_for(table, layout)
    try:
        sha = file_sha256(table)
    except FileNotFoundError:
        return None  # a scan running beside this one claimed it first
    stem, suffix = split_table_name(table.name)  # reviews.csv.gz -> reviews--<sha>.csv.gz
    target = layout.processing / f"{stem}--{sha[:12]}{suffix}"
    try:
        os.rename(table, target)  # atomic within one file system: exactly one scanner wins
    except FileNotFoundError:
        return None
    _claim_marker(target).write_text(this_holder(), encoding="utf-8")  # who prepares it, till recorded
    if own_job.exists():
        shutil.copy2(own_job, target.with_name(_stem(target.name) + JOB_SUFFIX))
        own_job.unlink()
    return Claimed(name=table.name, path=target, sha256=sha, job=job)


def _claim_marker(processing_path: Path) -> Path:
    return processing_path.with_name(f".{processing_path.name}.claimed-by")


# A claim whose holder is on another machine is taken as dead after this long unrecorded
# (on this machine a dead holder is seen at once).
STRANDED_AFTER_S = 3600.0


def stranded(layout: InboxLayout, recorded: set[Path], now: float | None = None) -> list[Path]:
    """Claimed tables no run records and no live scan is preparing: their scan was killed
    between the claim and the record, and nothing else would ever look at them again."""
    if not layout.processing.is_dir():
        return []
    moment = time.time() if now is None else now
    found = []
    for path in sorted(layout.processing.iterdir()):
        if path.name.startswith(".") or table_suffix(path) is None or path.resolve() in recorded:
            continue
        marker = _claim_marker(path)
        holder = marker.read_text(encoding="utf-8").strip() if marker.exists() else ""
        claimed_at = (marker if marker.exists() else path).stat().st_mtime
        if holder_is_dead(holder) or moment - claimed_at > STRANDED_AFTER_S:
            found.append(path)
    return found


def return_to_inbox(processing_path: Path, layout: InboxLayout) -> Path:
    """Put a stranded claim back where it was dropped (with its own job), for the next scan."""
    name = dropped_name(processing_path)
    target = _free_path(layout.inbox, name)
    job = processing_path.with_name(_stem(processing_path.name) + JOB_SUFFIX)
    if job.exists():
        shutil.move(job, _free_path(layout.inbox, _stem(target.name) + JOB_SUFFIX))
    shutil.move(processing_path, target)
    _claim_marker(processing_path).unlink(missing_ok=True)
    return target


def dropped_name(processing_path: Path) -> str:
    """reviews--0123456789ab.csv -> reviews.csv (reviews--0123456789ab.csv.gz -> reviews.csv.gz)"""
    named, suffix = split_table_name(processing_path.name)
    stem, _, _ = named.rpartition("--")
    return (stem or named) + suffix


def output_for(
    name: str, sha256: str, layout: InboxLayout, taken: set[Path] | frozenset[Path] = frozenset()
) -> Path:
    """outbox/name.parquet, or name--<sha>.parquet when another content holds or will hold
    that name (`taken`: the outputs of runs still open)."""
    stem = _stem(name)
    plain = layout.outbox / f"{stem}.parquet"
    if plain.exists() or plain in taken or plain.resolve() in {p.resolve() for p in taken}:
        return layout.outbox / f"{stem}--{sha256[:12]}.parquet"
    return plain


def _free_path(folder: Path, name: str) -> Path:
    candidate = folder / name
    stem, suffix = split_table_name(name)
    counter = 1
    while candidate.exists():
        candidate = folder / f"{stem}.{counter}{suffix}"
        counter += 1
    return candidate


def _stem(name: str) -> str:
    """A file name without its table suffix, compound ones whole: reviews.csv.gz -> reviews."""
    return split_table_name(name)[0]


def archive(processing_path: Path, layout: InboxLayout) -> Path:
    """Move a finished input (and its job file) to archive/, never over another file."""
    target = _free_path(layout.archive, processing_path.name)
    shutil.move(processing_path, target)
    _claim_marker(processing_path).unlink(missing_ok=True)
    job = processing_path.with_name(_stem(processing_path.name) + JOB_SUFFIX)
    if job.exists():
        shutil.move(job, _free_path(layout.archive, job.name))
    return target


def fail(path: Path, error: Exception | str, layout: InboxLayout) -> Path:
    """Move a file that cannot be processed to failed/ with name.error.md explaining why."""
    name = dropped_name(path) if path.parent == layout.processing else path.name
    target = _free_path(layout.failed, name)
    if path.exists():
        shutil.move(path, target)
    _claim_marker(path).unlink(missing_ok=True)
    job = path.with_name(_stem(path.name) + JOB_SUFFIX)  # beside it, in the inbox or in processing/
    if job.exists():
        shutil.move(job, _free_path(layout.failed, _stem(name) + JOB_SUFFIX))
    message = str(error)
    kind = "The job or the file needs a fix" if isinstance(error, GrokBatchError) else "Unexpected error"
    note = (
        f"# {name} could not be processed\n\n{kind}:\n\n```\n{message}\n```\n\n"
        f"Fix it and drop the file into the inbox again ({layout.inbox}).\n"
    )
    target.with_name(_stem(target.name) + ".error.md").write_text(note, encoding="utf-8")
    return target
