"""Column layouts shared by stages: the rows manifest, normalized results, the output."""

from __future__ import annotations

import pyarrow as pa

# Final outcome of a row; every custom_id ends in exactly one.
SUCCEEDED = "succeeded"
FAILED = "failed"
INVALID_OUTPUT = "invalid_output"
CANCELLED = "cancelled"
EXPIRED = "expired"
REJECTED = "rejected"
ROW_STATUSES = (SUCCEEDED, FAILED, INVALID_OUTPUT, CANCELLED, EXPIRED, REJECTED)

# rows.parquet: one line per input row, in input order.
MANIFEST_SCHEMA = pa.schema(
    [
        ("custom_id", pa.string()),
        ("row_index", pa.int64()),
        ("shard", pa.int32()),  # null when the row is rejected before sending, or answered from cache
        ("reject_reason", pa.string()),
        ("request_key", pa.binary(16)),  # row_cache key of the rendered prompt (null when rejected)
        ("cached", pa.bool_()),  # answered from the row cache: not sent
    ]
)

# results/*.parquet: one normalized record per custom_id answered by a batch.
RESULT_SCHEMA = pa.schema(
    [
        ("custom_id", pa.string()),
        ("status", pa.string()),
        ("response", pa.string()),
        ("finish_reason", pa.string()),
        ("model", pa.string()),
        ("prompt_tokens", pa.int64()),
        ("completion_tokens", pa.int64()),
        ("reasoning_tokens", pa.int64()),
        ("cached_tokens", pa.int64()),
        ("service_cost_usd", pa.float64()),  # what the service says it charged, where it says
        ("batch_id", pa.string()),
        ("error", pa.string()),
        ("retryable", pa.bool_()),  # worth sending again in a follow-up round
        ("round", pa.int32()),  # 1 for the first submission, 2.. for follow-up rounds
    ]
)

# Columns added to every output row, in this order (custom_id first), and their types.
OUTPUT_RESULT_COLUMNS = [
    "custom_id",
    "status",
    "response",
    "finish_reason",
    "model",
    "prompt_tokens",
    "completion_tokens",
    "reasoning_tokens",
    "cached_tokens",
    "cost_usd",
    "service_cost_usd",
    "attempts",
    "from_cache",
    "batch_id",
    "error",
]
RESULT_TYPES = {
    **{f.name: f.type for f in RESULT_SCHEMA},
    "cost_usd": pa.float64(),
    "attempts": pa.int32(),
    "from_cache": pa.bool_(),
}
