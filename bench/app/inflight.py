"""How many requests this server process is handling, counted from Django's request signals.

The driver waits until it is down to its own ``/stats/`` request before a timed load: requests a
warm-up left behind (their client gone) would otherwise still take the server's time.
"""

from __future__ import annotations

import threading
from typing import Any

_lock = threading.Lock()  # gevent-patched in the gevent worker: a greenlet lock there
_count = 0


def started(**_: Any) -> None:
    """``request_started`` receiver."""
    global _count
    with _lock:
        _count += 1


def finished(**_: Any) -> None:
    """``request_finished`` receiver."""
    global _count
    with _lock:
        _count -= 1


def in_flight() -> int:
    """Requests started and not finished, the caller's included."""
    return _count
