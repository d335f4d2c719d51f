"""Realistic tables for benchmarks: review-like text (word counts drawn from a log-normal
around ~30 words), an id, a product and a rating; generated column-wise by Arrow."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

_VOCABULARY = (
    "the a and it is was this product great good bad love hate works broke after two days "
    "quality price shipping fast slow would buy again never recommend excellent terrible "
    "battery screen size color fits comfortable cheap sturdy returned refund support helpful "
    "ordered arrived box manual easy setup minutes weeks months perfect gift daughter son "
    "kitchen office travel sound light heavy small large better worse than expected"
)
_WORDS = _VOCABULARY.split()


def make_table(rows: int, seed: int = 42, mean_words: float = 30.0) -> pa.Table:
    rng = np.random.default_rng(seed)
    words = pa.array(_WORDS)
    counts = np.clip(rng.lognormal(np.log(mean_words), 0.5, rows).astype(np.int64), 1, 400)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    picks = pa.array(rng.integers(0, len(_WORDS), int(offsets[-1])))
    lists = pa.LargeListArray.from_arrays(pa.array(offsets), words.take(picks))
    text = pc.binary_join(lists, " ")
    return pa.table(
        {
            "review_id": pc.binary_join_element_wise(
                "R", pc.cast(pa.array(np.arange(rows)), pa.string()), ""
            ),
            "product": pa.array(rng.choice(["lamp", "boots", "kettle", "chair", "earbuds"], rows)),
            "stars": pa.array(rng.integers(1, 6, rows)),
            "text": text.cast(pa.string()),
        }
    )


def write_table(rows: int, path: Path, seed: int = 42) -> Path:
    """Write `rows` rows to Parquet in slices, so generating 10M rows stays lean."""
    step = 1_000_000
    with pq.ParquetWriter(path, make_table(1, seed).schema) as writer:
        for start in range(0, rows, step):
            chunk = make_table(min(step, rows - start), seed + start)
            ids = pc.binary_join_element_wise(
                "R", pc.cast(pa.array(np.arange(start, start + chunk.num_rows)), pa.string()), ""
            )
            writer.write_table(chunk.set_column(0, "review_id", ids))
    return path
