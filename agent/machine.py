"""How many cores this process may run on: the one number every thread pool and worker count is sized by."""

from __future__ import annotations

import os


def usable_cores() -> int:
    """The CPUs this process is allowed to use, not the host's count.

    A container or `taskset` often narrows the affinity mask below `os.cpu_count()`; sizing thread pools, joblib
    workers or llama.cpp threads by the host's count then oversubscribes the few cores the process really has.
    """
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # no affinity API (macOS, Windows)
        return max(1, os.cpu_count() or 1)
