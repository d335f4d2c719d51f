"""What a flow run shows in the Prefect UI: progress, the summary table, the report."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)

from tasks import runner
from tasks.infra.work_copies import local_for, url_for
from tasks.stages.report import RunSummary, render_markdown
from tasks.stages.report_html import html_report_path, status_chart_data_uri


def progress_text(progress: runner.Progress) -> str:
    return f"round {progress.round_no}: {progress.finished}/{progress.requests} requests finished"


class ProgressArtifact:
    """One progress artifact on the current flow run, updated as the run advances."""

    def __init__(self, run_key: str, artifact_id: str | None = None) -> None:
        """A new artifact, or the one this flow run made before it was suspended."""
        self.artifact_id: Any = artifact_id or create_progress_artifact(
            progress=0.0, key=f"grok-batch-progress-{run_key}", description=f"grok-batch run {run_key}"
        )

    def __call__(self, progress: runner.Progress) -> None:
        update_progress_artifact(
            artifact_id=self.artifact_id,
            progress=100.0 * progress.fraction,
            description=progress_text(progress),
        )


def publish_progress(run: dict[str, Any], progress: runner.Progress) -> None:
    """A background pass's news of a run: on its home's own progress bar when it has one,
    else a keyed progress artifact."""
    if run.get("progress_artifact_id"):
        update_progress_artifact(
            artifact_id=UUID(run["progress_artifact_id"]),
            progress=100.0 * progress.fraction,
            description=progress_text(progress),
        )
        return
    create_progress_artifact(
        progress=100.0 * progress.fraction,
        key=f"grok-batch-progress-{run['run_key']}",
        description=f"{run['job_name']} on {run['input_path'].rsplit('/', 1)[-1]}: {progress_text(progress)}",
    )


def publish_summary(summary: RunSummary, run_key: str) -> None:
    """On the current flow run: rows by status (with their share), tokens and cost, and the report."""
    total = max(summary.rows, 1)
    by_status = [
        {"status": status, "rows": count, "share": f"{100.0 * count / total:.1f}%"}
        for status, count in summary.by_status.items()
        if count
    ]
    create_table_artifact(table=by_status, key=f"grok-batch-summary-{run_key}", description="Rows by status")
    usage = [{"measure": name, "value": value} for name, value in summary.tokens.items()]
    usage += [
        {"measure": "cost_usd", "value": round(summary.cost_usd, 6)},
        {"measure": "service_cost_usd", "value": summary.service_cost_usd},
        {"measure": "rows answered from the cache", "value": summary.from_cache},
        {"measure": "rounds (attempts)", "value": summary.rounds},
    ]
    create_table_artifact(table=usage, key=f"grok-batch-usage-{run_key}", description="Tokens and cost")
    # The status chart as an image the UI draws (its markdown renderer allows data:image/ sources);
    # every chart is in the HTML report beside the output.
    title, _, rest = render_markdown(summary).partition("\n")
    chart = f"![rows by status]({status_chart_data_uri(summary.by_status)})"
    page = html_report_path(local_for(summary.output_path))
    more = f"All charts: `{url_for(page)}`\n\n" if page.exists() else ""
    create_markdown_artifact(
        markdown=f"{title}\n\n{chart}\n\n{more}{rest.lstrip()}",
        key=f"grok-batch-report-{run_key}",
        description="Run report",
    )
