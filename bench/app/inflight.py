"""How many requests this server process is handling, and has started, from Django's request signals.

The driver waits until it is down to its own ``/stats/`` request before a timed load: requests a
warm-up left behind (their client gone) would otherwise still take the server's time. It divides
the server's CPU time by the requests started, ``/stats/`` left out (:func:`served`).
"""

from __future__ import annotations

import threading
from typing import Any

_lock = threading.Lock()  # gevent-patched in the gevent worker: a greenlet lock there
_count = 0
_served = 0

STATS_PATH = "/stats/"


def _path(scope: dict[str, Any] | None = None, environ: dict[str, Any] | None = None, **_: Any) -> str:
    """The request's path, from ``request_started``'s arguments (ASGI ``scope``, WSGI ``environ``)."""
    if scope is not None:
        return scope.get("path", "")
    return environ.get("PATH_INFO", "") if environ is not None else ""


def started(**kwargs: Any) -> None:
    """``request_started`` receiver."""
    global _count, _served
    counted = _path(**kwargs) != STATS_PATH
    with _lock:
        _count += 1
        _served += counted


def finished(**_: Any) -> None:
    """``request_finished`` receiver."""
    global _count
    with _lock:
        _count -= 1


def in_flight() -> int:
    """Requests started and not finished, the caller's included."""
    return _count


def served() -> int:
    """Requests started other than ``/stats/``, since the process started."""
    return _served
