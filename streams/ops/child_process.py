"""Child processes that cannot outlive their parent.

The embedded broker and demo/test workers run in their own process group (so a
terminal's Ctrl-C reaches the parent first, which then stops them in order).
If the parent dies without cleaning up (SIGKILL, a CI timeout), Linux's
parent-death signal ends the child too: no orphan brokers.
"""

from __future__ import annotations

import ctypes
import signal
import sys
from collections.abc import Callable

PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:  # not glibc: fall back to explicit cleanup only
        pass


def die_with_parent() -> Callable[[], None] | None:
    """A `preexec_fn` for subprocess.Popen (None where prctl does not exist)."""
    return _die_with_parent if sys.platform.startswith("linux") else None
