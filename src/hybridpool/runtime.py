"""Which driver serves the calling code.

Decided per call from the process's state, never by importing gevent or creating a hub to ask:
gevent is "active" when ``gevent.monkey`` is already imported and has patched ``threading``, which is
what makes Django's per-thread connections per-greenlet (gunicorn's gevent worker does it before
loading the application).
"""

from __future__ import annotations

import sys
import threading
import weakref
from typing import Any

from .config import PoolConfig


def gevent_active() -> bool:
    """True if gevent has monkey-patched ``threading`` in this process."""
    monkey = sys.modules.get("gevent.monkey")
    return monkey is not None and monkey.is_module_patched("threading")


def gevent_blocking(forced: bool = False) -> str | None:
    """Say why psycopg would block gevent's hub in this process, or None if it will not.

    psycopg waits cooperatively only if gevent has patched ``select`` before psycopg was imported
    (it picks its wait function at import). Checked when gevent has patched ``threading`` (the
    green driver's runtime), or always if ``forced`` (``driver="gevent"``).
    """
    monkey = sys.modules.get("gevent.monkey")
    if not forced and not (monkey is not None and monkey.is_module_patched("threading")):
        return None
    if monkey is None or not (monkey.is_module_patched("select") and monkey.is_module_patched("socket")):
        return ("the green driver serves this process but gevent has not patched select and socket:"
                " psycopg's queries and connects block every greenlet")
    waiting = sys.modules.get("psycopg.waiting")
    if waiting is not None and waiting.wait is getattr(waiting, "wait_c", None):
        return ("psycopg was imported before gevent patched select: it waits with its C function,"
                " and each query blocks every greenlet until it ends")
    return None


def current_borrower() -> weakref.ref[Any]:
    """A weak reference to the calling greenlet (when gevent patched ``threading``) or thread:
    what holds a connection, and ends."""
    if gevent_active():
        import gevent

        return weakref.ref(gevent.getcurrent())
    return weakref.ref(threading.current_thread())


def driver_for(config: PoolConfig) -> str:
    """Return ``"gevent"`` or ``"thread"``: the ``driver`` setting, or the runtime's for ``"auto"``."""
    if config.driver != "auto":
        return config.driver
    return "gevent" if gevent_active() else "thread"
