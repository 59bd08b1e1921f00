"""Background work below searches: indexing and the duplicate finder share the cores with
searches, which come first."""

from __future__ import annotations

import logging
import os
import threading

log = logging.getLogger(__name__)

_LOWEST = 19  # Linux's lowest priority (highest nice)


def lower_priority(nice: int) -> None:
    """Run the calling thread `nice` steps below the process's main thread, whatever it ran
    at before (a thread started by one already lowered is not lowered twice). Linux
    schedules threads apart, so searches get the cores first while background work takes
    what is left; a model run or a SIFT pass runs in the calling thread. A service started
    under `nice 5` runs its background threads at 15."""
    if nice:
        try:
            # PRIO_PROCESS of the process id: the main thread's level on Linux.
            lowered = min(_LOWEST, os.getpriority(os.PRIO_PROCESS, os.getpid()) + nice)
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), lowered)
        except OSError as exc:
            log.warning("cannot lower a background thread's priority error=%s", exc)
