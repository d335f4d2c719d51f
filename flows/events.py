"""Prefect events a user can chain on: grok-batch.run.submitted, .finished and .failed,
with the run as the resource (job, input, output, rows by status, cost)."""

from __future__ import annotations

from typing import Any

from prefect.events import emit_event


def emit_run_event(kind: str, run: dict[str, Any], payload: dict[str, Any] | None = None) -> None:
    """`run` is the ledger's row of the run; `payload` adds what is known (rows, cost)."""
    emit_event(
        event=f"grok-batch.run.{kind}",
        resource={
            "prefect.resource.id": f"grok-batch.run.{run['run_key']}",
            "prefect.resource.name": f"{run['job_name']} · {str(run['input_path']).rsplit('/', 1)[-1]}",
            "grok-batch.job": str(run["job_name"]),
            "grok-batch.input": str(run["input_path"]),
            "grok-batch.output": str(run.get("output_path") or ""),
        },
        payload={"run_key": run["run_key"], "output_path": run.get("output_path"), **(payload or {})},
    )
