"""Whether a process is still there: how a dead lease holder, a dead prepare or a dead
inbox claim is told apart from a live one on this machine."""

from __future__ import annotations

import os
import socket

WORKER_NAME_ENV = "GROK_BATCH_WORKER_NAME"


def this_machine() -> str:
    """This machine as leases name it: $GROK_BATCH_WORKER_NAME (containers of one host that do
    not share their process tables must each have their own), else the host name."""
    return os.environ.get(WORKER_NAME_ENV, "").strip() or socket.gethostname()


def this_holder() -> str:
    """This process, as leases and claims name it: machine:pid."""
    return f"{this_machine()}:{os.getpid()}"


def holder_is_dead(holder: str) -> bool:
    """True for a holder process on this machine that no longer exists (on another machine
    nothing can be told: its lease expires instead)."""
    host, _, pid = holder.rpartition(":")
    return host == this_machine() and pid.isdigit() and not process_alive(int(pid))


def process_alive(pid: int) -> bool:
    """Whether a process with this id exists here (one we may not signal counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
