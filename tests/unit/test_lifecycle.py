"""The lifecycle tables and the pure next-actions function, over every state; and the
ledger refusing what the tables do not allow."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from tasks.infra.ledger import Attempt, Ledger
from tasks.lifecycle import (
    PASS_ORDER,
    RUN_TRANSITIONS,
    STEP_TRANSITIONS,
    Action,
    BatchState,
    RunState,
    ShardView,
    Step,
    TransitionError,
    next_action_after,
    next_actions,
)

# Every shard a ledger can hold: a step, the last state seen, and whether a batch id is known.
SHARDS = [
    ShardView(step, state, batch_id)
    for step, state, batch_id in itertools.product(Step, [None, *BatchState], [None, "batch_1"])
]


def _expected_batch_actions(shard: ShardView, cancel: bool) -> list[Action]:
    """Written out from the lifecycle's rules, independently of next_actions' code."""
    unsent = shard.batch_id is None and shard.step != Step.CREATED
    in_flight = shard.step == Step.CREATED and shard.state in (
        None,
        BatchState.VALIDATING,
        BatchState.RUNNING,
    )
    finished = shard.step == Step.CREATED and not in_flight
    actions = []
    if unsent:
        actions.append(Action.CLOSE_UNSENT if cancel else Action.SUBMIT)
    if in_flight:
        actions.append(Action.POLL)
    if finished:
        actions.append(Action.COLLECT)
    if shard.step == Step.COLLECTED:
        actions.append(Action.RECONCILE)
    return actions


@pytest.mark.parametrize("cancel", [False, True])
def test_one_shard_of_an_open_batch_run_in_every_state(cancel: bool) -> None:
    for shard in SHARDS:
        assert next_actions(RunState.OPEN, "batch", cancel, [shard]) == _expected_batch_actions(
            shard, cancel
        ), shard


@pytest.mark.parametrize("cancel", [False, True])
def test_one_shard_of_an_open_sync_run_in_every_state(cancel: bool) -> None:
    for shard in SHARDS:
        expected = [Action.RECONCILE] if shard.step == Step.COLLECTED else [Action.ANSWER]
        assert next_actions(RunState.OPEN, "sync", cancel, [shard]) == expected, shard


@pytest.mark.parametrize("mode", ["batch", "sync"])
def test_complete_and_finished_runs_only_join_and_failed_runs_do_nothing(mode: str) -> None:
    for shards in ([], SHARDS):
        assert next_actions(RunState.COMPLETE, mode, False, shards) == [Action.JOIN]
        assert next_actions(RunState.FINISHED, mode, True, shards) == [Action.JOIN]
        assert next_actions(RunState.FAILED, mode, False, shards) == []


def test_pairs_of_shards_give_the_union_in_pass_order() -> None:
    for first, second in itertools.product(SHARDS[::3], SHARDS[1::3]):
        got = next_actions(RunState.OPEN, "batch", False, [first, second])
        one, two = _expected_batch_actions(first, False), _expected_batch_actions(second, False)
        union = {a for a in one + two if a != Action.RECONCILE}
        if Action.RECONCILE in one and Action.RECONCILE in two:
            union.add(Action.RECONCILE)  # only once every shard is collected
        assert got == sorted(union, key=PASS_ORDER.index)


def test_a_pass_goes_forward_only_and_never_joins() -> None:
    planned, in_flight = ShardView(Step.PLANNED, None, None), ShardView(Step.CREATED, "running", "b")
    assert next_action_after(None, RunState.OPEN, "batch", False, [planned, in_flight]) == Action.SUBMIT
    assert (
        next_action_after(Action.SUBMIT, RunState.OPEN, "batch", False, [planned, in_flight]) == Action.POLL
    )
    assert next_action_after(Action.POLL, RunState.OPEN, "batch", False, [planned, in_flight]) is None
    assert next_action_after(None, RunState.COMPLETE, "batch", False, []) is None


def test_every_step_and_state_has_a_row_in_its_table() -> None:
    assert set(STEP_TRANSITIONS) == set(Step) and set(RUN_TRANSITIONS) == set(RunState)
    assert STEP_TRANSITIONS[Step.COLLECTED] == frozenset()  # the end of a shard
    assert all(Step.PLANNED not in allowed for allowed in STEP_TRANSITIONS.values())  # never back
    assert [s for s in Step if s.sent] == [Step.CREATING, Step.CREATED, Step.ANSWERING, Step.COLLECTED]


def test_the_ledger_refuses_a_transition_the_tables_do_not_allow(tmp_path: Path) -> None:
    ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.sqlite'}")
    ledger.ensure_run("k1", "/runs/k1", "job", "xai", Attempt("/in.csv", "/out.parquet"))
    ledger.plan_batches("k1", 1, [(0, "/s0", 10)])
    name = ledger.batches("k1")[0].batch_name
    with pytest.raises(TransitionError, match="step planned cannot become collected"):
        ledger.update_batch(name, step=Step.COLLECTED)
    for step in (Step.UPLOADING, Step.UPLOADING, Step.UPLOADED, Step.CREATING, Step.CREATED, Step.COLLECTED):
        ledger.update_batch(name, step=step)  # the lifecycle's own order, a repeat included
    with pytest.raises(TransitionError, match="step collected cannot become planned"):
        ledger.update_batch(name, step=Step.PLANNED)
    assert ledger.batches("k1")[0].step == Step.COLLECTED  # the refused change wrote nothing
    with pytest.raises(TransitionError, match="state open cannot become finished"):
        ledger.update_run("k1", state=RunState.FINISHED)
    ledger.update_run("k1", state=RunState.COMPLETE)
    ledger.update_run("k1", state=RunState.FINISHED)
    with pytest.raises(TransitionError, match="state finished cannot become failed"):
        ledger.update_run("k1", state=RunState.FAILED)
    assert ledger.run("k1")["state"] == RunState.FINISHED
    ledger.close()


def test_the_lease_is_reentrant_and_released_by_the_outermost_block(tmp_path: Path) -> None:
    ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.sqlite'}")
    ledger.ensure_run("k1", "/runs/k1", "job", "xai", Attempt("/in.csv", "/out.parquet"))
    with ledger.lease("k1"):
        with ledger.lease("k1"):  # a stage inside a driver's block
            ledger.renew("k1")
        assert ledger.run("k1")["holder"] is not None  # still the driver's
    assert ledger.run("k1")["holder"] is None
    with pytest.raises(RuntimeError), ledger.lease("k1"):
        raise RuntimeError("boom")
    assert ledger.run("k1")["holder"] is None  # released on errors too
    ledger.close()
