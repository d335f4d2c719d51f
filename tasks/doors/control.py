"""What `status`, `cancel` and `resume` do, as plain functions the CLI (and anyone) calls."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from tasks import runner
from tasks.infra.errors import GrokBatchError, ProviderError
from tasks.infra.ledger import BatchRow, Ledger, RunBusyError, round_and_shard
from tasks.infra.run_layout import RunPaths
from tasks.infra.storage import locate
from tasks.infra.work_copies import local_for
from tasks.lifecycle import RunState, Step, is_terminal
from tasks.providers.registry import make_provider
from tasks.stages.poll import poll_open


def find_run(ledger: Ledger, prefix: str) -> dict[str, Any]:
    """The one run whose key starts with `prefix`, or an error listing what matched."""
    matches = ledger.find_runs(prefix)
    if len(matches) != 1:
        found = ", ".join(m["run_key"] for m in matches) or "none"
        raise GrokBatchError(f"run {prefix!r} matches {len(matches)} runs in {ledger.display_url} ({found})")
    return matches[0]


@dataclass(frozen=True)
class RunDetail:
    """One run as `status RUN` shows it: the ledger's figures, refreshed from the service
    when it could be asked, and how fresh they are."""

    run: dict[str, Any]
    batches: list[BatchRow]
    outcomes: dict[str, int]  # rows by final status so far (collected batches, latest round)
    freshness: str  # "live from the service", or why not and how old the figures are
    output_exists: bool

    def as_dict(self) -> dict[str, Any]:
        rounds: dict[int, dict[str, int]] = {}
        for b in self.batches:
            counts = rounds.setdefault(b.round_no, {"requests": 0, "finished": 0})
            counts["requests"] += b.lines
            counts["finished"] += b.lines if b.step == Step.COLLECTED else b.finished
        return {
            **{k: v for k, v in self.run.items() if k not in ("holder", "lease_until")},
            "cancel_requested": bool(self.run.get("cancel_requested")),
            "output_exists": self.output_exists,
            "freshness": self.freshness,
            "rows_by_status": self.outcomes,
            "rounds": [{"round": n, **c} for n, c in sorted(rounds.items())],
            "batches": [
                {
                    "batch": b.batch_id or b.batch_name,
                    "round": b.round_no,
                    "requests": b.lines,
                    "step": b.step,
                    "state": b.state,
                    "finished": b.finished,
                    "message": b.message,
                }
                for b in self.batches
            ],
        }


@dataclass(frozen=True)
class RunStatus:
    runs: list[dict[str, Any]]
    detail: RunDetail | None  # of the one run asked for by key, else None


def run_status(ledger: Ledger, prefix: str | None, refresh: bool = True) -> RunStatus:
    """The runs whose key starts with `prefix` (all without one), and the detail of the run
    when exactly one matches a prefix: with `refresh`, its open batches are asked about at
    the service first (under the run's lease, so the ledger is brought up to date too)."""
    runs = ledger.find_runs(prefix or "")
    if not (prefix and len(runs) == 1):
        return RunStatus(runs, None)
    key = runs[0]["run_key"]
    freshness = _refresh(ledger, key) if refresh else "not refreshed (--no-refresh)"
    run = ledger.run(key) or runs[0]
    batches = ledger.batches(key)
    if not freshness.startswith("live"):
        heard = max((b.updated_at for b in batches), default=0.0)
        freshness += f"; ledger figures from {_age(heard)}" if heard else ""
    output = locate(run["output_path"]) if run["output_path"] else None
    detail = RunDetail(
        run, batches, _outcomes(local_for(run["run_dir"])), freshness, bool(output and output.exists())
    )
    return RunStatus([run], detail)


def _refresh(ledger: Ledger, key: str) -> str:
    open_batches = [
        b for b in ledger.batches(key) if b.step == Step.CREATED and b.batch_id and not is_terminal(b.state)
    ]
    if not open_batches:
        return "live: no batch is open at the service"
    try:
        handle = runner.handle_for(ledger, key)
        provider = make_provider(handle.job.provider, handle.job.base_url)
        with ledger.lease(key):
            poll_open(ledger, provider, key)
    except RunBusyError:
        holder = (ledger.run(key) or {}).get("holder") or "another process"
        return f"not refreshed: {holder} is driving the run and polls it"
    except ProviderError as exc:
        return f"not refreshed: the service could not be asked ({exc})"
    return "live from the service"


def _outcomes(run_dir: Path) -> dict[str, int]:
    """Rows by status in the collected results so far, each row counted once (its latest round)."""
    files = sorted(RunPaths(run_dir).results_dir.glob("*.parquet"))
    if not files:
        return {}
    parts = []
    for file in files:
        table = pq.read_table(file, columns=["custom_id", "status"])
        round_no, _ = round_and_shard(file.stem)
        parts.append(table.append_column("round", pa.array([round_no] * table.num_rows, pa.int32())))
    records = pa.concat_tables(parts)
    latest = (
        records.group_by("custom_id").aggregate([("round", "max")]).rename_columns(["custom_id", "round"])
    )
    final = records.join(latest, ["custom_id", "round"], join_type="inner")
    counts = final.group_by("status").aggregate([("status", "count")])
    return dict(
        zip(counts.column("status").to_pylist(), counts.column("status_count").to_pylist(), strict=True)
    )


def _age(at: float) -> str:
    seconds = max(0.0, time.time() - at)
    if seconds < 120:
        return f"{seconds:.0f} s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min ago"
    return f"{seconds / 3600:.1f} h ago"


@dataclass(frozen=True)
class CancelOutcome:
    run_key: str
    state: str  # the run's state when asked
    already_requested: bool
    cancelled_at_service: int
    nothing_to_cancel: bool  # finished or failed: no call was made


def cancel_run(ledger: Ledger, prefix: str) -> CancelOutcome:
    """Cancel a run: from now on nothing more is created and no follow-up round is planned;
    its batches at the service are cancelled. Finished results are kept for the join.
    A finished or failed run has nothing to cancel: no call is made.

    The request is a flag in the ledger, so it works while another driver holds the lease
    (that driver closes the unsent shards on its next pass); when the lease is free, the
    unsent shards are closed here at once."""
    run = find_run(ledger, prefix)
    key = run["run_key"]
    if run["state"] in (RunState.FINISHED, RunState.FAILED):
        return CancelOutcome(key, run["state"], bool(run["cancel_requested"]), 0, True)
    ledger.update_run(key, cancel_requested=True)
    handle = runner.handle_for(ledger, key)
    provider = make_provider(handle.job.provider, handle.job.base_url)
    cancelled = 0
    for row in ledger.batches(key):
        if row.batch_id and row.step == Step.CREATED and not is_terminal(row.state):
            provider.cancel(row.batch_id)
            cancelled += 1
    try:
        with ledger.lease(key):
            if handle.plan.mode == "batch":
                runner.close_unsent(ledger, provider, handle)
    except RunBusyError:
        pass  # the holder sees the flag on its next pass
    return CancelOutcome(key, run["state"], bool(run["cancel_requested"]), cancelled, False)
