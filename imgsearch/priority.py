"""Background work below searches: indexing and the duplicate finder share the cores with
searches, which come first."""

from __future__ import annotations

import logging
import os
import threading

log = logging.getLogger(__name__)


def lower_priority(nice: int) -> None:
    """Run the calling thread `nice` steps below the rest of the process (Linux schedules
    threads apart, so searches get the cores first while background work takes what is left;
    a model run or a SIFT pass runs in the calling thread)."""
    if nice:
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)
        except OSError as exc:
            log.warning("cannot lower a background thread's priority error=%s", exc)
