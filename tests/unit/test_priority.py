"""Background threads run a fixed number of steps below the process, however they start."""

from __future__ import annotations

import subprocess
import sys

_PROBE = """
import os, threading
from imgsearch.priority import lower_priority

os.nice(5)  # a service started under `nice 5`
seen = []

def level():
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

def inner():
    lower_priority(10)  # started by a lowered thread: lowered from the process, not again
    seen.append(level())

def outer():
    lower_priority(10)
    seen.append(level())
    child = threading.Thread(target=inner)
    child.start()
    child.join()

thread = threading.Thread(target=outer)
thread.start()
thread.join()
process = level()
lower_priority(30)  # never past the lowest
print(*seen, process, level())
"""


def test_background_threads_run_nice_steps_below_the_process() -> None:
    # A fresh process: os.nice cannot be undone, so not in the test runner itself.
    done = subprocess.run(
        [sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=60, check=True
    )
    start = int(done.stdout.split()[2]) - 5  # the runner's own level, 0 in CI
    outer, inner, process, lowest = (int(value) for value in done.stdout.split())
    assert (outer, inner) == (min(19, start + 15), min(19, start + 15))
    assert (process, lowest) == (min(19, start + 5), 19)
