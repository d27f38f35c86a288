"""How many requests this server process is handling, and has started: a middleware that is both
sync and async.

The driver waits until it is down to its own ``/stats/`` request before a timed load: requests a
warm-up left behind (their client gone) would otherwise still take the server's time. It divides
the server's CPU time by the requests started, ``/stats/`` left out (:func:`served`).

A middleware rather than ``request_started`` and ``request_finished`` receivers: Django's ASGI
handler runs a sync ``request_started`` receiver in the request thread, one thread hop per request
that a real project does not have beyond Django's own receivers (and that hybridpool's ASGI
application saves: :mod:`hybridpool.asgi.signals`). Under ASGI this middleware runs on the event
loop, under WSGI in the worker: no hop in either.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from asgiref.sync import iscoroutinefunction
from django.utils.decorators import sync_and_async_middleware

_lock = threading.Lock()  # gevent-patched in the gevent worker: a greenlet lock there
_count = 0
_served = 0

STATS_PATH = "/stats/"


def started(path: str) -> None:
    """A request for ``path`` starts."""
    global _count, _served
    with _lock:
        _count += 1
        _served += path != STATS_PATH


def finished() -> None:
    """A request has its response."""
    global _count
    with _lock:
        _count -= 1


@sync_and_async_middleware
def counting(get_response: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """The middleware: counts each request from its start to its response."""
    if iscoroutinefunction(get_response):
        async def middleware(request: Any) -> Any:
            started(request.path)
            try:
                return await get_response(request)
            finally:
                finished()

        return middleware

    def sync_middleware(request: Any) -> Any:
        started(request.path)
        try:
            return get_response(request)
        finally:
            finished()

    return sync_middleware


def in_flight() -> int:
    """Requests started and not answered, the caller's included."""
    return _count


def served() -> int:
    """Requests started other than ``/stats/``, since the process started."""
    return _served
