"""grok-batch for notebooks and scripts.

    import grok_batch
    out = grok_batch.run(df, prompt="Classify: {{ text }}", model="grok-4.3")

`run` returns the DataFrame with an answer, usage, cost and status on every row (or, with
`wait=False`, a `Run` to check on later); `estimate` says what it would cost first. Same
ledger, row cache and exactly-once guarantees as the `grok-batch` command line.
"""

from grok_batch.api import Run, estimate, run

__all__ = ["Run", "estimate", "run"]
