"""A run's lifecycle as data: the steps of a batch (one shard of one round), the states of a
run, the transitions each allows, and a pure function from a run's ledger rows to the
actions that would move it on. `runner.advance` only carries those actions out; the ledger
refuses a transition these tables do not allow.

    batch (a shard)   planned ─▶ uploading ─▶ uploaded ─▶ creating ─▶ created ─▶ collected
                         │ mode sync                                    ▲
                         └──────────────────▶ answering ────────────────┘
      (cancel: a shard not yet created goes straight to `created`, state cancelled, no call)

    run               open ─▶ complete ─▶ finished        open ─▶ failed ─▶ open (a rerun)
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum

from tasks.infra.errors import GrokBatchError


class BatchState(StrEnum):
    """Where a batch stands, whatever the protocol calls it."""

    VALIDATING = "validating"  # uploaded, not yet parsed (xAI: every counter still 0)
    RUNNING = "running"
    DONE = "done"  # nothing pending; results are final
    REJECTED = "rejected"  # the service refused the file; its message says why
    CANCELLED = "cancelled"
    EXPIRED = "expired"  # the deadline passed with requests still pending
    # The service no longer knows the batch (HTTP 404): nothing more can be read or cancelled;
    # its rows without an outcome go to the next round like any retryable failure.
    GONE = "gone"

    @property
    def terminal(self) -> bool:
        return self not in (BatchState.VALIDATING, BatchState.RUNNING)


class Step(StrEnum):
    """Where a shard stands on our side; the ledger hears each before the paid call it names."""

    PLANNED = "planned"  # written to disk, nothing sent
    UPLOADING = "uploading"  # the upload may have happened: the file id is not known yet
    UPLOADED = "uploaded"  # file id recorded
    CREATING = "creating"  # the create call may have happened: look the batch up by name first
    CREATED = "created"  # batch id recorded (or the shard was closed unsent); the service works
    ANSWERING = "answering"  # mode sync: answers go to the shard's journal
    COLLECTED = "collected"  # results/<batch>.parquet holds an outcome for every request

    @property
    def sent(self) -> bool:
        """Whether the shard may be costing money: a rerun keeps going, the budget no longer applies."""
        return self in (Step.CREATING, Step.CREATED, Step.ANSWERING, Step.COLLECTED)


class RunState(StrEnum):
    """Where a whole run stands."""

    OPEN = "open"  # rows still on their way
    COMPLETE = "complete"  # every row has its final outcome; the output is not written yet
    FINISHED = "finished"  # output and report written
    FAILED = "failed"  # stopped by an error a person must look at; a rerun reopens it


# A step may always be written again (a rerun repeats the intent of a call it cannot be sure of).
STEP_TRANSITIONS: dict[Step, frozenset[Step]] = {
    Step.PLANNED: frozenset({Step.UPLOADING, Step.ANSWERING, Step.CREATED}),
    Step.UPLOADING: frozenset({Step.UPLOADED, Step.CREATED}),
    Step.UPLOADED: frozenset({Step.CREATING, Step.CREATED}),
    Step.CREATING: frozenset({Step.CREATED}),
    Step.CREATED: frozenset({Step.COLLECTED}),
    Step.ANSWERING: frozenset({Step.COLLECTED}),
    Step.COLLECTED: frozenset(),
}

RUN_TRANSITIONS: dict[RunState, frozenset[RunState]] = {
    RunState.OPEN: frozenset({RunState.COMPLETE, RunState.FAILED}),
    RunState.COMPLETE: frozenset({RunState.FINISHED, RunState.FAILED}),
    RunState.FINISHED: frozenset(),  # a later command may write the output again: still finished
    RunState.FAILED: frozenset({RunState.OPEN}),
}


class TransitionError(GrokBatchError):
    """A step or state change the lifecycle does not allow: a bug, never a user's mistake."""


def check_step(name: str, current: str, new: str) -> None:
    old, step = Step(current), Step(new)
    if step != old and step not in STEP_TRANSITIONS[old]:
        raise TransitionError(f"batch {name}: step {old} cannot become {step}")


def check_run_state(run_key: str, current: str, new: str) -> None:
    old, state = RunState(current), RunState(new)
    if state != old and state not in RUN_TRANSITIONS[old]:
        raise TransitionError(f"run {run_key}: state {old} cannot become {state}")


class Action(StrEnum):
    """What a pass over a run may do, in the order a pass does them."""

    CLOSE_UNSENT = "close-unsent"  # cancel requested: shards never sent end cancelled, no call
    SUBMIT = "submit"  # upload and create the batches of shards not yet sent
    ANSWER = "answer-sync"  # mode sync: in place of submit, poll and collect
    POLL = "poll"  # ask the service about batches in flight
    COLLECT = "collect"  # page the results of batches that reached a terminal state
    RECONCILE = "reconcile"  # the round is collected: plan the follow-up round, or complete the run
    JOIN = "join"  # every row has its outcome: write the output and the report


PASS_ORDER: tuple[Action, ...] = tuple(Action)


@dataclass(frozen=True)
class ShardView:
    """The part of a ledger batch row the lifecycle looks at."""

    step: str
    state: str | None  # the last BatchState seen
    batch_id: str | None

    @property
    def terminal(self) -> bool:
        return is_terminal(self.state)


def is_terminal(state: str | None) -> bool:
    """Whether a batch's last seen state is final (its results can be collected)."""
    return state is not None and BatchState(state).terminal


def next_actions(
    run_state: str, mode: str, cancel_requested: bool, shards: Iterable[ShardView]
) -> list[Action]:
    """The actions that have work to do now, in pass order. Pure: the same rows give the
    same answer, so a driver that crashed can be followed by any other."""
    state = RunState(run_state)
    if state in (RunState.COMPLETE, RunState.FINISHED):
        return [Action.JOIN]
    if state == RunState.FAILED:
        return []
    views: Sequence[ShardView] = list(shards)
    actions: list[Action] = []
    if mode == "sync":
        if any(s.step != Step.COLLECTED for s in views):
            actions.append(Action.ANSWER)
    else:
        if any(s.batch_id is None and s.step != Step.CREATED for s in views):
            actions.append(Action.CLOSE_UNSENT if cancel_requested else Action.SUBMIT)
        if any(s.step == Step.CREATED and not s.terminal for s in views):
            actions.append(Action.POLL)
        if any(s.step == Step.CREATED and s.terminal for s in views):
            actions.append(Action.COLLECT)
    if all(s.step == Step.COLLECTED for s in views):
        actions.append(Action.RECONCILE)
    return actions


def next_action_after(
    done: Action | None, run_state: str, mode: str, cancel_requested: bool, shards: Iterable[ShardView]
) -> Action | None:
    """The first action with work that comes after `done` in pass order (None: the pass is
    over). A pass goes forward only, so it is bounded; the next pass starts from the top."""
    after = -1 if done is None else PASS_ORDER.index(done)
    for action in next_actions(run_state, mode, cancel_requested, shards):
        if PASS_ORDER.index(action) > after and action != Action.JOIN:
            return action
    return None
