"""Where a run keeps its row-level files, and the small plan prepare leaves behind."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from tasks.infra.storage import Location
from tasks.infra.work_copies import local_for, pull_tree, push_tree, store_for

DATA_DIR_ENV = "GROK_BATCH_DATA_DIR"


def data_root(data_dir: str | Path | None = None) -> Path:
    """Where runs and the ledger live: the given folder, else $GROK_BATCH_DATA_DIR, else ./data
    (so every worker of a team can be pointed at the shared one).

    A URL (s3://bucket/grok) puts the data on a store: what is returned is then this machine's
    working copy of it (tasks.infra.work_copies), a cache any worker may lose; `store_for`
    and `url_for` there give the store back."""
    return local_for(str(data_dir or os.environ.get(DATA_DIR_ENV) or "data"))


def run_key(input_sha256: str, job_fingerprint: str, encoding: str = "utf-8") -> str:
    """Same file (read the same way) + same job = same key, so a rerun finds its run."""
    read_as = "" if encoding.lower().replace("_", "-") in ("utf-8", "utf8") else f":{encoding}"
    return hashlib.sha256(f"{input_sha256}:{job_fingerprint}{read_as}".encode()).hexdigest()[:16]


@dataclass(frozen=True)
class RunPaths:
    """A run's files on this machine. With the data on a store, run_dir is a working copy of
    the run's folder there: `publish` sends finished files up before the ledger records the
    step that made them (a record never points at a file only one machine has), and `pull`
    fetches what another worker published."""

    run_dir: Path

    @property
    def store(self) -> Location | None:
        return store_for(self.run_dir)

    def publish(self, *finished: Path, replace: bool = True) -> int:
        """Upload these files (a folder: every file in it) unless the store has them at the
        same size (or at all, when not `replace`); returns how many went up. Nothing to do for
        a run on this disk."""
        return push_tree(self.run_dir, *finished, replace=replace)

    def pull(self) -> int:
        """Fetch the run's files this machine lacks, or holds shorter (a journal another worker
        added answers to); returns how many came down."""
        return pull_tree(self.run_dir)

    def shard_file(self, recorded: str) -> Path:
        """This machine's copy of a shard the ledger names (recorded by whichever worker planned it)."""
        return self.requests_dir / Path(recorded).name

    @property
    def plan(self) -> Path:
        return self.run_dir / "run.json"

    @property
    def manifest(self) -> Path:
        return self.run_dir / "rows.parquet"

    @property
    def schema(self) -> Path:
        return self.run_dir / "input-schema.arrow"

    @property
    def cached(self) -> Path:
        """Records of the rows answered from the row cache (round 0: never sent)."""
        return self.run_dir / "cached.parquet"

    @property
    def requests_dir(self) -> Path:
        return self.run_dir / "requests"

    @property
    def results_dir(self) -> Path:
        return self.run_dir / "results"

    @property
    def report(self) -> Path:
        return self.run_dir / "report.md"

    def shard(self, round_no: int, shard_no: int) -> Path:
        return self.requests_dir / f"round{round_no}-shard{shard_no:05d}.jsonl"

    def round_rows(self, round_no: int) -> Path:
        """custom_id -> shard for follow-up rounds (round 1 uses the rows manifest)."""
        return self.requests_dir / f"round{round_no}-rows.parquet"

    def results(self, batch_name: str) -> Path:
        return self.results_dir / f"{batch_name}.parquet"

    def journal(self, batch_name: str) -> Path:
        """mode sync: answers as they arrive, one JSON record per line."""
        return self.run_dir / "answers" / f"{batch_name}.jsonl"


@dataclass(frozen=True)
class ShardInfo:
    round_no: int
    shard_no: int
    path: str
    lines: int
    bytes: int


@dataclass(frozen=True)
class RunPlan:
    """What prepare produced; written once, atomically, as run.json."""

    run_key: str
    input_path: str
    input_sha256: str
    job: dict[str, Any]
    total_rows: int
    rejected_rows: int
    shards: list[ShardInfo] = field(default_factory=list)
    encoding: str = "utf-8"  # how the input text is read; the join reads it the same way
    mode: str = "batch"  # batch | sync: the job's mode, with `auto` resolved by the row count
    cached_rows: int = 0  # answered from the row cache, not sent
    prompt_tokens_estimate: int = 0  # over the rows to send (~4 bytes a token)

    def save(self, paths: RunPaths) -> None:
        tmp = paths.plan.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2, ensure_ascii=False), encoding="utf-8")
        tmp.replace(paths.plan)

    @classmethod
    def load(cls, paths: RunPaths) -> RunPlan:
        data = json.loads(paths.plan.read_text(encoding="utf-8"))
        data["shards"] = [ShardInfo(**s) for s in data["shards"]]
        return cls(**data)


def save_schema(schema: pa.Schema, path: Path) -> None:
    path.write_bytes(schema.serialize().to_pybytes())


def load_schema(path: Path) -> pa.Schema:
    return pa.ipc.read_schema(pa.py_buffer(path.read_bytes()))
