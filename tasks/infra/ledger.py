"""Durable control state: runs and their batches, with the intent recorded before every
paid call and the outcome right after it. SQLite by default; any SQLAlchemy URL
(PostgreSQL) when several workers share runs. Row-level data stays in run directories.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from tasks.infra.errors import GrokBatchError
from tasks.infra.logs import LOGGER
from tasks.infra.processes import holder_is_dead, this_holder
from tasks.infra.settings import number_setting
from tasks.infra.work_copies import store_for
from tasks.lifecycle import RunState, Step, check_run_state, check_step

metadata = sa.MetaData()

runs_table = sa.Table(
    "runs",
    metadata,
    sa.Column("run_key", sa.String(64), primary_key=True),
    sa.Column("run_dir", sa.Text, nullable=False),
    sa.Column("input_path", sa.Text, nullable=False),
    sa.Column("job_name", sa.String(128), nullable=False),
    sa.Column("provider", sa.String(32), nullable=False),
    sa.Column("output_path", sa.Text),
    sa.Column("overwrite", sa.Boolean, nullable=False, default=False),
    sa.Column("origin", sa.String(16), nullable=False, default="cli"),  # cli | inbox | deployment
    sa.Column("state", sa.String(16), nullable=False, default=RunState.OPEN),  # lifecycle.RunState
    sa.Column("round_no", sa.Integer, nullable=False, default=1),
    sa.Column("cancel_requested", sa.Boolean, nullable=False, default=False),
    sa.Column("holder", sa.String(255)),
    # The Prefect flow run that is the run's home while it waits suspended (deployed runs),
    # and the progress artifact on it that background passes update.
    sa.Column("flow_run_id", sa.String(64)),
    sa.Column("progress_artifact_id", sa.String(64)),
    sa.Column("lease_until", sa.Float),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
)

batches_table = sa.Table(
    "batches",
    metadata,
    sa.Column("batch_name", sa.String(128), primary_key=True),  # deterministic: found after a crash
    sa.Column("run_key", sa.String(64), sa.ForeignKey("runs.run_key"), nullable=False, index=True),
    sa.Column("round_no", sa.Integer, nullable=False),
    sa.Column("shard_no", sa.Integer, nullable=False),
    sa.Column("shard_path", sa.Text, nullable=False),
    sa.Column("lines", sa.Integer, nullable=False),
    sa.Column("step", sa.String(16), nullable=False, default=Step.PLANNED),  # lifecycle.Step
    sa.Column("file_id", sa.String(128)),
    sa.Column("batch_id", sa.String(128)),
    sa.Column("state", sa.String(16)),  # last normalized BatchState seen
    sa.Column("finished", sa.Integer, nullable=False, default=0),  # requests no longer pending
    sa.Column("message", sa.Text),
    sa.Column("updated_at", sa.Float, nullable=False),
    sa.UniqueConstraint("run_key", "round_no", "shard_no"),
)


# What each command that took a run over asked of it: the run's row holds the latest (the
# file the user gave this time, where the output goes), this table the history. A command
# that fails before taking the run over writes nothing anywhere.
attempts_table = sa.Table(
    "attempts",
    metadata,
    sa.Column("attempt_id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("run_key", sa.String(64), sa.ForeignKey("runs.run_key"), nullable=False, index=True),
    sa.Column("at", sa.Float, nullable=False),
    sa.Column("origin", sa.String(16), nullable=False),
    sa.Column("input_path", sa.Text, nullable=False),
    sa.Column("output_path", sa.Text, nullable=False),
    sa.Column("overwrite", sa.Boolean, nullable=False),
    sa.Column("requested_by", sa.String(255), nullable=False),
)


# The fleet's shared pacing of calls a provider limits per team (batch creations): one row
# per limit (a provider and its server), whose next free slot every process moves on
# atomically (GCRA), so the limit holds for all workers together, not for each.
# Holds on names other than runs (an inbox drop being claimed): taken before work that must
# happen once across machines, given back after; a dead holder's hold is taken over at once
# on its own machine, elsewhere when it runs out.
holds_table = sa.Table(
    "holds",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("holder", sa.String(255), nullable=False),
    sa.Column("until", sa.Float, nullable=False),
)

rate_slots_table = sa.Table(
    "rate_slots",
    metadata,
    sa.Column("limit_key", sa.Text, primary_key=True),  # what is limited, e.g. "batch-create xai <server>"
    sa.Column("next_free", sa.Float, nullable=False),  # the limit's theoretical arrival time (epoch s)
)


@dataclass(frozen=True)
class Attempt:
    """What one command asks of a run: the input as given this time, the output, the door it
    came through (cli | inbox | deployment) and who asked (host:pid, or a flow run)."""

    input_path: str
    output_path: str
    overwrite: bool = False
    origin: str = "cli"
    requested_by: str = ""


class RunBusyError(GrokBatchError):
    """Another process holds the run's lease."""


# How long a lease lasts without renewal (GROK_BATCH_LEASE_S). Drivers renew it before every
# paid call and on every poll; a holder that died on this machine is taken over at once, one
# on another machine when its lease runs out.
LEASE_S = 300.0
LEASE_ENV = "GROK_BATCH_LEASE_S"


def lease_seconds() -> float:
    return number_setting(LEASE_ENV, LEASE_S, positive=True)


# The leases this process holds, by (ledger URL, run key): [the thread holding it, how deep
# its blocks nest]. The ledger names the process as holder (host:pid), so without this two
# threads of one process (a collector pass's pool) would both take one run.
_HELD: dict[tuple[str, str], list[int]] = {}
_HELD_LOCK = threading.Lock()

MIN_SLOT_WAIT_S = 0.001  # a slot that is free "now" by another process's clock: ask again soon


def default_ledger_url(data_dir: Path) -> str:
    named = os.environ.get("GROK_BATCH_LEDGER_URL")
    if named:
        return named
    store = store_for(data_dir)
    if store is not None and store.url not in _WARNED_LOCAL_LEDGER:
        _WARNED_LOCAL_LEDGER.add(store.url)
        LOGGER.warning(
            "the data is on %s but the ledger is this machine's own SQLite file: other machines "
            "cannot see or take over these runs; set GROK_BATCH_LEDGER_URL (PostgreSQL) for a team",
            store.url,
        )
    return f"sqlite:///{(data_dir / 'ledger.sqlite').resolve()}"


_WARNED_LOCAL_LEDGER: set[str] = set()


@dataclass(frozen=True)
class BatchRow:
    batch_name: str
    run_key: str
    round_no: int
    shard_no: int
    shard_path: str
    lines: int
    step: str
    file_id: str | None
    batch_id: str | None
    state: str | None
    finished: int
    message: str | None
    updated_at: float = 0.0  # when the ledger last heard of this batch


class Ledger:
    def __init__(self, url: str) -> None:
        self.url = url
        # For messages and `status`: a PostgreSQL password never reaches a terminal or a log.
        self.display_url = sa.engine.make_url(url).render_as_string(hide_password=True)
        if url.startswith("sqlite:///"):
            Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        self.engine: Engine = sa.create_engine(url, future=True, **_engine_options(url))
        if url.startswith("sqlite"):
            sa.event.listen(self.engine, "connect", _sqlite_pragmas)
        metadata.create_all(self.engine)
        _add_missing_columns(self.engine)
        self._abandoned: dict[str, str] = {}  # run key -> the dead holder its lease was taken from

    @contextmanager
    def tx(self) -> Iterator[Connection]:
        with self.engine.begin() as conn:
            yield conn

    def close(self) -> None:
        self.engine.dispose()

    # -- runs ----------------------------------------------------------------
    def ensure_run(self, run_key: str, run_dir: str, job_name: str, provider: str, attempt: Attempt) -> None:
        """Record a run the first time a command takes it (an existing run is left as it is:
        what a later command asks is recorded by `take_over`, under the lease)."""
        # A command starting the same run at the same moment may record it first: the same row.
        with suppress(sa.exc.IntegrityError):
            self._insert_run(run_key, run_dir, job_name, provider, attempt, time.time())

    def _insert_run(
        self, run_key: str, run_dir: str, job_name: str, provider: str, attempt: Attempt, now: float
    ) -> None:
        with self.tx() as conn:
            if conn.execute(sa.select(runs_table.c.run_key).where(runs_table.c.run_key == run_key)).first():
                return
            conn.execute(
                runs_table.insert().values(
                    run_key=run_key,
                    run_dir=run_dir,
                    input_path=attempt.input_path,
                    job_name=job_name,
                    provider=provider,
                    output_path=attempt.output_path,
                    overwrite=attempt.overwrite,
                    origin=attempt.origin,
                    state=RunState.OPEN,
                    round_no=1,
                    cancel_requested=False,
                    created_at=now,
                    updated_at=now,
                )
            )

    def take_over(self, run_key: str, attempt: Attempt) -> None:
        """The command holding the run's lease now drives it: the run writes where this one
        asked, names the file it gave, and a failed run is open again."""
        run = self.run(run_key) or {}
        state = RunState.OPEN if run.get("state") == RunState.FAILED else run.get("state", RunState.OPEN)
        self.update_run(
            run_key,
            input_path=attempt.input_path,
            output_path=attempt.output_path,
            overwrite=attempt.overwrite,
            origin=attempt.origin,
            state=state,
        )
        requested_by = attempt.requested_by or this_holder()
        latest = (self.attempts(run_key) or [{}])[-1]
        if all(latest.get(k) == v for k, v in {**vars(attempt), "requested_by": requested_by}.items()):
            return  # the same request again (a resumed flow run): one attempt
        with self.tx() as conn:
            conn.execute(
                attempts_table.insert().values(
                    run_key=run_key,
                    at=time.time(),
                    origin=attempt.origin,
                    input_path=attempt.input_path,
                    output_path=attempt.output_path,
                    overwrite=attempt.overwrite,
                    requested_by=requested_by,
                )
            )

    def attempts(self, run_key: str) -> list[dict[str, Any]]:
        with self.tx() as conn:
            rows = conn.execute(
                sa.select(attempts_table)
                .where(attempts_table.c.run_key == run_key)
                .order_by(attempts_table.c.attempt_id)
            ).mappings()
            return [dict(r) for r in rows]

    def run(self, run_key: str) -> dict[str, Any] | None:
        with self.tx() as conn:
            row = (
                conn.execute(sa.select(runs_table).where(runs_table.c.run_key == run_key)).mappings().first()
            )
            return dict(row) if row else None

    def find_runs(self, prefix: str) -> list[dict[str, Any]]:
        with self.tx() as conn:
            rows = conn.execute(
                sa.select(runs_table).where(runs_table.c.run_key.startswith(prefix, autoescape=True))
            ).mappings()
            return [dict(r) for r in rows]

    def open_runs(self) -> list[dict[str, Any]]:
        with self.tx() as conn:
            rows = conn.execute(sa.select(runs_table).where(runs_table.c.state == RunState.OPEN)).mappings()
            return [dict(r) for r in rows]

    def cancel_requested(self, run_key: str) -> bool:
        """Whether `grok-batch cancel` was given for the run: nothing more may be sent."""
        return bool((self.run(run_key) or {}).get("cancel_requested"))

    def update_run(self, run_key: str, **values: Any) -> None:
        """Change a run's fields; a new `state` must be one the lifecycle allows."""
        self._update(runs_table.c.run_key, run_key, runs_table.c.state, check_run_state, values)

    def _update(
        self,
        key_column: sa.Column[Any],
        key: str,
        checked: sa.Column[Any],
        check: Callable[[str, str, str], None],
        values: dict[str, Any],
    ) -> None:
        """Update one row in a transaction, refusing a change of `checked` that `check` refuses."""
        table = key_column.table
        with self.tx() as conn:
            if checked.name in values:
                current = conn.execute(sa.select(checked).where(key_column == key)).scalar()
                if current is not None:
                    check(key, current, values[checked.name])
            conn.execute(table.update().where(key_column == key).values(updated_at=time.time(), **values))

    @contextmanager
    def lease(self, run_key: str, wait_s: float = 0.0) -> Iterator[None]:
        """Hold the run's lease for the block: claimed on entry (RunBusyError when another
        driver, or another thread of this process, still has it after `wait_s`), renewed by
        `renew`, released on exit. Re-entrant within a thread, so a stage called inside a
        driver's block shares the driver's lease."""
        deadline = time.monotonic() + wait_s
        while True:
            try:
                self._enter_lease(run_key)
                break
            except RunBusyError:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.5)
        try:
            yield
        finally:
            self._leave_lease(run_key)

    def _enter_lease(self, run_key: str) -> None:
        held_key, thread = (self.url, run_key), threading.get_ident()
        with _HELD_LOCK:
            held = _HELD.get(held_key)
            if held is not None and held[0] == thread:
                held[1] += 1
                return
            if held is not None:
                raise RunBusyError(
                    f"run {run_key} is being worked on by another thread of this process "
                    f"({this_holder()}); wait for it, or rerun later"
                )
            _HELD[held_key] = [thread, 0]  # claiming: the other threads here keep off
        try:
            self.claim(run_key, this_holder(), lease_seconds())
        except BaseException:
            with _HELD_LOCK:
                del _HELD[held_key]
            raise
        with _HELD_LOCK:
            _HELD[held_key][1] = 1

    def _leave_lease(self, run_key: str) -> None:
        held_key = (self.url, run_key)
        with _HELD_LOCK:
            _HELD[held_key][1] -= 1
            if _HELD[held_key][1] > 0:
                return
        try:  # still marked ours until released, so no thread here claims it meanwhile
            self.release(run_key, this_holder())
        finally:
            with _HELD_LOCK:
                del _HELD[held_key]

    def renew(self, run_key: str) -> None:
        """Extend our lease before a paid call or a long wait; RunBusyError if another
        driver took the run over meanwhile (this one must stop before paying for anything)."""
        self.claim(run_key, this_holder(), lease_seconds())

    def claim(self, run_key: str, holder: str, lease_s: float) -> None:
        """Take the run's lease, or raise RunBusyError naming who holds it (use `lease`). A
        lease taken from a holder that died (its lease ran out, or its process is gone from
        this machine) is noted: `abandoned_by(run_key)` names it until the lease is released."""
        now = time.time()
        self._abandoned.pop(run_key, None)
        with self.tx() as conn:
            taken = conn.execute(
                runs_table.update()
                .where(runs_table.c.run_key == run_key)
                .where(sa.or_(runs_table.c.holder.is_(None), runs_table.c.holder == holder))
                .values(holder=holder, lease_until=now + lease_s)
            ).rowcount
            if taken != 1:
                stale, until = conn.execute(
                    sa.select(runs_table.c.holder, runs_table.c.lease_until).where(
                        runs_table.c.run_key == run_key
                    )
                ).first() or (None, None)
                # Ran out (on any machine) or SIGKILLed on this one: take over from exactly it.
                if stale and ((until or 0.0) < now or holder_is_dead(stale)):
                    taken = conn.execute(
                        runs_table.update()
                        .where(runs_table.c.run_key == run_key, runs_table.c.holder == stale)
                        .values(holder=holder, lease_until=now + lease_s)
                    ).rowcount
                    if taken == 1:
                        self._abandoned[run_key] = stale
            if taken != 1:
                row = conn.execute(
                    sa.select(runs_table.c.holder, runs_table.c.lease_until).where(
                        runs_table.c.run_key == run_key
                    )
                ).first()
                who, until = (row[0], row[1]) if row else ("?", now)
                left = max(0.0, (until or now) - now)
                raise RunBusyError(
                    f"run {run_key} is being worked on by {who} (lease for {left:.0f}s more); "
                    "wait for it, or rerun later"
                )

    @contextmanager
    def hold(self, name: str, hold_s: float) -> Iterator[bool]:
        """Hold `name` (at most 64 characters) for the block: True when the hold is ours, False
        while another holder has it. For work on things that are not runs (an inbox drop on a
        store, which has no atomic rename); runs take `lease`."""
        holder = this_holder()
        ours = self._take_hold(name, holder, hold_s)
        try:
            yield ours
        finally:
            if ours:
                with self.tx() as conn:
                    conn.execute(
                        holds_table.delete().where(holds_table.c.name == name, holds_table.c.holder == holder)
                    )

    def _take_hold(self, name: str, holder: str, hold_s: float) -> bool:
        for _attempt in range(3):  # free, taken, or given back between the two looks: bounded
            now = time.time()
            with suppress(sa.exc.IntegrityError), self.tx() as conn:
                conn.execute(holds_table.insert().values(name=name, holder=holder, until=now + hold_s))
                return True
            with self.tx() as conn:
                row = conn.execute(
                    sa.select(holds_table.c.holder, holds_table.c.until).where(holds_table.c.name == name)
                ).first()
                if row is None:
                    continue  # given back meanwhile: try the insert again
                if row.holder != holder and row.until >= now and not holder_is_dead(row.holder):
                    return False
                taken = conn.execute(
                    holds_table.update()
                    .where(holds_table.c.name == name, holds_table.c.holder == row.holder)
                    .values(holder=holder, until=now + hold_s)
                ).rowcount
                return bool(taken == 1)
        return False

    def abandoned_by(self, run_key: str) -> str | None:
        """The holder that died holding this run's lease, when this ledger took the lease from
        it (a driver that finds its run's flow run still 'Running' knows then it is not)."""
        return self._abandoned.get(run_key)

    def release(self, run_key: str, holder: str) -> None:
        self._abandoned.pop(run_key, None)
        with self.tx() as conn:
            conn.execute(
                runs_table.update()
                .where(runs_table.c.run_key == run_key, runs_table.c.holder == holder)
                .values(holder=None, lease_until=None)
            )

    # -- the fleet's rate limits -----------------------------------------------
    def take_slot(self, limit_key: str, now: float, interval_s: float, burst: int = 1) -> float:
        """Take a slot of the fleet-wide limit `limit_key` (one call every `interval_s`, up to
        `burst` at once) at time `now` (epoch seconds): 0.0 when taken, else the seconds
        until one may be free (nothing taken; ask again then). GCRA: one atomic UPDATE moves
        the limit's next free time on, so two processes never take the same slot."""
        tolerance = max(burst - 1, 0) * interval_s
        next_free = rate_slots_table.c.next_free
        with self.tx() as conn:
            taken = conn.execute(
                rate_slots_table.update()
                .where(rate_slots_table.c.limit_key == limit_key, next_free <= now + tolerance)
                .values(next_free=sa.case((next_free > now, next_free), else_=now) + interval_s)
            ).rowcount
            if taken == 1:
                return 0.0
            booked = conn.execute(
                sa.select(next_free).where(rate_slots_table.c.limit_key == limit_key)
            ).scalar()
        if booked is None:  # the first call ever under this limit
            try:
                with self.tx() as conn:
                    conn.execute(
                        rate_slots_table.insert().values(limit_key=limit_key, next_free=now + interval_s)
                    )
            except sa.exc.IntegrityError:
                return MIN_SLOT_WAIT_S  # another process was first: ask again
            return 0.0
        return max(float(booked) - tolerance - now, MIN_SLOT_WAIT_S)

    # -- batches -------------------------------------------------------------
    def plan_batches(self, run_key: str, round_no: int, shards: list[tuple[int, str, int]]) -> None:
        """Record shards (shard_no, path, lines) of a round; existing ones are kept as they are."""
        now = time.time()
        with self.tx() as conn:
            known = {
                r[0]
                for r in conn.execute(
                    sa.select(batches_table.c.shard_no).where(
                        batches_table.c.run_key == run_key, batches_table.c.round_no == round_no
                    )
                )
            }
            for shard_no, path, lines in shards:
                if shard_no in known:
                    continue
                conn.execute(
                    batches_table.insert().values(
                        batch_name=batch_name(run_key, round_no, shard_no),
                        run_key=run_key,
                        round_no=round_no,
                        shard_no=shard_no,
                        shard_path=path,
                        lines=lines,
                        step=Step.PLANNED,
                        finished=0,
                        updated_at=now,
                    )
                )

    def batches(self, run_key: str, round_no: int | None = None) -> list[BatchRow]:
        query = sa.select(batches_table).where(batches_table.c.run_key == run_key)
        if round_no is not None:
            query = query.where(batches_table.c.round_no == round_no)
        query = query.order_by(batches_table.c.round_no, batches_table.c.shard_no)
        with self.tx() as conn:
            rows = conn.execute(query).mappings().all()
        return [BatchRow(**{k: row[k] for k in BatchRow.__dataclass_fields__}) for row in rows]

    def update_batch(self, name: str, **values: Any) -> None:
        """Change a batch's fields; a new `step` must be one the lifecycle allows."""
        self._update(batches_table.c.batch_name, name, batches_table.c.step, check_step, values)


def batch_name(run_key: str, round_no: int, shard_no: int) -> str:
    """The deterministic name a shard's batch is created under (and found by after a crash)."""
    return f"grok-batch-{run_key}-r{round_no}-s{shard_no:05d}"


def round_and_shard(name: str) -> tuple[int, int]:
    """(round_no, shard_no) back from a `batch_name`."""
    round_part, shard_part = name.rsplit("-", 2)[1:]
    return int(round_part.removeprefix("r")), int(shard_part.removeprefix("s"))


def _add_missing_columns(engine: Engine) -> None:
    """A ledger written by an older grok-batch lacks the newer nullable columns: add them."""
    inspector = sa.inspect(engine)
    for table in metadata.sorted_tables:
        present = {c["name"] for c in inspector.get_columns(table.name)}
        missing = [c for c in table.columns if c.name not in present]
        with engine.begin() as conn:
            for column in missing:
                kind = column.type.compile(dialect=engine.dialect)
                conn.execute(sa.text(f"ALTER TABLE {table.name} ADD COLUMN {column.name} {kind}"))


def _engine_options(url: str) -> dict[str, Any]:
    # Threads share the engine (a collector pass advances runs concurrently): a few
    # connections are kept, and a busy moment opens more rather than waiting for one.
    pool = {"pool_size": 8, "max_overflow": -1}
    if url.startswith("sqlite"):
        return {"connect_args": {"timeout": 60, "check_same_thread": False}, **pool}
    return {"pool_pre_ping": True, **pool}


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=60000")
    cursor.close()
