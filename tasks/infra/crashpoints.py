"""Named points where the fault-injection tests kill the process (SIGKILL, no cleanup).

Set GROK_BATCH_CRASH_AT=<name> to die the first time the pipeline passes that point.
Unset (always, outside tests) this costs one environment lookup.
"""

from __future__ import annotations

import os
import signal

AFTER_UPLOAD = "after_upload"
AFTER_CREATE = "after_create"  # the batch exists but the ledger has not heard of it
WHILE_POLLING = "while_polling"
WHILE_COLLECTING = "while_collecting"
WHILE_JOINING = "while_joining"
AFTER_SYNC_ANSWER = "after_sync_answer"  # mode sync: an answer is journaled, more to come


def crashpoint(name: str) -> None:
    if os.environ.get("GROK_BATCH_CRASH_AT") == name:
        os.kill(os.getpid(), signal.SIGKILL)
