"""What a flow run shows in the Prefect UI: progress, the summary table, the report."""

from __future__ import annotations

from typing import Any

from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)

from tasks import runner
from tasks.stages.report import RunSummary, render_markdown


def progress_text(progress: runner.Progress) -> str:
    return f"round {progress.round_no}: {progress.finished}/{progress.requests} requests finished"


class ProgressArtifact:
    """One progress artifact on the current flow run, updated as the run advances."""

    def __init__(self, run_key: str) -> None:
        self.artifact_id: Any = create_progress_artifact(
            progress=0.0, description=f"grok-batch run {run_key}"
        )

    def __call__(self, progress: runner.Progress) -> None:
        update_progress_artifact(
            artifact_id=self.artifact_id,
            progress=100.0 * progress.fraction,
            description=progress_text(progress),
        )


def publish_progress(run: dict[str, Any], progress: runner.Progress) -> None:
    """A keyed progress artifact for a run advanced by a background pass."""
    create_progress_artifact(
        progress=100.0 * progress.fraction,
        key=f"grok-batch-progress-{run['run_key']}",
        description=f"{run['job_name']} on {run['input_path'].rsplit('/', 1)[-1]}: {progress_text(progress)}",
    )


def publish_summary(summary: RunSummary, run_key: str) -> None:
    counts = [{"status": s, "rows": n} for s, n in summary.by_status.items() if n]
    counts += [{"status": f"tokens: {k}", "rows": v} for k, v in summary.tokens.items()]
    counts += [
        {"status": "cost_usd", "rows": round(summary.cost_usd, 6)},
        {"status": "rounds (attempts)", "rows": summary.rounds},
    ]
    create_table_artifact(table=counts, key=f"grok-batch-summary-{run_key}", description="Rows by status")
    create_markdown_artifact(
        markdown=render_markdown(summary), key=f"grok-batch-report-{run_key}", description="Run report"
    )
