"""Row-level result cache, content-addressed by the request.

An answer is stored under (namespace, key): the namespace hashes everything a job puts
around the prompt (provider, model, system message, request parameters, response
schema), the key hashes the rendered prompt. So a re-dropped file with rows appended, or
a rerun of a job whose template changed for some rows, sends only the requests never
answered before. Only succeeded answers are stored. Segments are Parquet files, one per
run (rewritten whole, atomically, when that run finishes), under
`<data>/cache/<namespace>/`, or GROK_BATCH_CACHE_DIR.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from tasks.infra.records import RESULT_SCHEMA
from tasks.infra.work_copies import local_for, pull_tree, push_tree
from tasks.spec.endpoints import server_url
from tasks.spec.job import JobSpec

CACHE_ENV = "GROK_BATCH_CACHE_DIR"
KEY_TYPE = pa.binary(16)
STORED_FIELDS = [
    "response",
    "finish_reason",
    "model",
    "prompt_tokens",
    "completion_tokens",
    "reasoning_tokens",
    "cached_tokens",
    "service_cost_usd",
]
CACHE_SCHEMA = pa.schema(
    [pa.field("request_key", KEY_TYPE)] + [RESULT_SCHEMA.field(name) for name in STORED_FIELDS]
)


def cache_root(runs_root: Path) -> Path:
    """Beside the runs, or GROK_BATCH_CACHE_DIR (a folder or a store URL): a working copy of a
    store's cache is filled from it when read and adds its segment to it when written."""
    named = os.environ.get(CACHE_ENV)
    return local_for(named) if named else runs_root.parent / "cache"


def namespace(job: JobSpec) -> str:
    """Hash of the request around the prompt, and of the server that answers it (an
    emulator's answers must never stand in for the real service's): answers are reusable
    only within it."""
    around = {
        "provider": job.provider,
        "server": server_url(job.provider, job.base_url),
        "model": job.model,
        "system": job.system,
        "params": job.request_params,
    }
    canonical = json.dumps(around, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:24]


def request_keys(prompts: pa.Array) -> pa.Array:
    """A 128-bit BLAKE2b of each rendered prompt (~0.6 us a row)."""
    blake = hashlib.blake2b
    values = pc.cast(prompts, pa.binary()).to_pylist()
    return pa.array([None if v is None else blake(v, digest_size=16).digest() for v in values], type=KEY_TYPE)


class CacheIndex:
    """The keys stored in one namespace, to mark rows answered before."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        pull_tree(folder)  # segments other workers' runs added to the store
        found = folder.glob("*.parquet") if folder.is_dir() else []
        self.segments = sorted(found, key=lambda f: f.stat().st_mtime_ns)  # oldest first
        chunks = [pq.read_table(f, columns=["request_key"]).column(0) for f in self.segments]
        self.keys = pc.unique(pa.chunked_array(chunks, type=KEY_TYPE)) if chunks else pa.array([], KEY_TYPE)

    def __len__(self) -> int:
        return len(self.keys)

    def hits(self, keys: pa.Array) -> pa.Array:
        if not len(self.keys):
            return pa.array(np.zeros(len(keys), dtype=bool))
        return pc.fill_null(pc.is_in(keys, value_set=self.keys), False)

    def records(self, keys: pa.Array) -> pa.Table:
        """One stored record per key in `keys` (the newest segment wins)."""
        wanted = pc.unique(keys)
        found = [
            pq.read_table(f, schema=CACHE_SCHEMA).filter(pc.is_in(pc.field("request_key"), value_set=wanted))
            for f in self.segments
        ]
        table = pa.concat_tables(found) if found else CACHE_SCHEMA.empty_table()
        # Later rows win: index of the last occurrence of each key.
        reversed_keys = table.column("request_key").combine_chunks()[::-1]
        last = pc.index_in(wanted, value_set=reversed_keys)
        return table.take(pc.subtract(len(table) - 1, last))


class CacheWriter:
    """Collects a run's succeeded answers into its segment, written atomically on close."""

    def __init__(self, folder: Path, run_key: str) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.target = folder / f"{run_key}.parquet"
        self.partial = self.target.with_suffix(".parquet.partial")
        self.rows = 0
        self._writer = pq.ParquetWriter(self.partial, CACHE_SCHEMA)

    def add(self, keys: pa.Array, outcomes: pa.Table) -> None:
        table = pa.table([keys] + [outcomes.column(name) for name in STORED_FIELDS], schema=CACHE_SCHEMA)
        self._writer.write_table(table)
        self.rows += table.num_rows

    def close(self, keep: bool = True) -> None:
        self._writer.close()
        if keep and self.rows:
            self.partial.replace(self.target)
            push_tree(self.target.parent, self.target)
        else:
            self.partial.unlink(missing_ok=True)
