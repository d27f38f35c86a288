"""One thread hop less per request: Django's ``request_started`` receivers, decided on the loop.

Django's ASGI handler sends ``request_started`` with ``asend()``, which runs the signal's sync
receivers in the request thread: one ``sync_to_async`` hop per request (a thread woken, the loop
woken, the GIL handed over twice), even when the receivers have nothing to do. Saving it took
hybridpool's application, one ``afirst()`` per request under uvicorn at 10 clients, from 1.18x to
1.29x Django's pool's requests/s and from 0.89x to 0.76x its CPU per request
(``bench/results/e2e-20261205T101001Z.md`` before, ``e2e-20261205T132238Z.md`` after). Django connects two:
``reset_queries``, which empties ``connection.queries`` (filled with ``DEBUG`` on), and
``close_old_connections``, which gives back or closes each connection of the thread that is
obsolete or unusable.

Under hybridpool's ASGI application both usually have nothing to do. The request thread is one of
:class:`~hybridpool.asgi.application.RequestThreads`, and it gave back its pooled connections at
its previous request's end: ``request_finished``, whose ``close_old_connections`` Django runs in
the request thread when it closes the response. So :func:`install` replaces them, once per process,
by :func:`request_started`, an async receiver that runs them in the request thread, as Django would,
only when they may have work:

- the request is not handled by hybridpool's application (Django's own ASGI handler, its
  ``AsyncClient``), or a sync ``send()``;
- ``DEBUG`` is on (``reset_queries``);
- an alias is not pooled by hybridpool (a persistent connection's age and health are checked at each
  request's start);
- the request thread still holds a pooled connection (its lease in the pool says so: a previous
  request that ended without giving it back). A request is lent its thread at its first sync part,
  after ``request_started``: the thread is asked then, and runs Django's receivers first if it
  holds one (:meth:`~hybridpool.asgi.application.RequestExecutor.start`). A thread made for one
  request (one that waited in vain for a kept thread) holds none.

Source: Django's ``Signal.asend`` (``django/dispatch/dispatcher.py``: sync receivers run in one
``sync_to_async`` call, async ones on the loop) and ``ASGIHandler.handle``.
"""

from __future__ import annotations

import contextvars
import threading
from typing import Any

from asgiref.sync import sync_to_async

from .. import registry

#: The executor of the current request's sync parts
#: (:class:`~hybridpool.asgi.application.RequestExecutor`), while hybridpool's ASGI application
#: handles the request; None otherwise.
request_thread: contextvars.ContextVar[Any] = contextvars.ContextVar("hybridpool_request_thread", default=None)

#: The ENGINEs whose aliases hybridpool pools (unless ``OPTIONS["pool"]`` is False).
ENGINES = frozenset({"hybridpool.backends.postgresql", "hybridpool.backends.postgis"})

_installed = False
_lock = threading.Lock()


def install() -> bool:
    """Replace Django's ``request_started`` receivers ``reset_queries`` and
    ``close_old_connections`` by :func:`request_started`, once per process; return True if it was
    done now. ``request_finished`` keeps Django's ``close_old_connections``."""
    global _installed
    from django.core.signals import request_started as signal
    from django.db import close_old_connections, reset_queries

    with _lock:
        if _installed:
            return False
        signal.disconnect(reset_queries)
        signal.disconnect(close_old_connections)
        signal.connect(request_started, dispatch_uid="hybridpool-request-started")
        _installed = True
        return True


async def request_started(signal: Any = None, sender: Any = None, **kwargs: Any) -> None:
    """``request_started`` receiver: Django's ``reset_queries`` and ``close_old_connections``, run
    in the request thread when :func:`needs_thread` says they may have work."""
    if needs_thread():
        await sync_to_async(django_receivers)()


def needs_thread() -> bool:
    """True unless Django's ``request_started`` receivers would do nothing in this request (the
    module docstring's list)."""
    from django.conf import settings

    # Under hybridpool's application, the thread a request is lent runs them first if it holds
    # a connection (RequestExecutor.start): no need to ask here.
    return request_thread.get() is None or settings.DEBUG or not _pooled_only()


def django_receivers() -> None:
    """Django's two ``request_started`` receivers, in the calling (request) thread."""
    from django.db import close_old_connections, reset_queries

    reset_queries()
    close_old_connections()


def _pooled_only() -> bool:
    """True if hybridpool pools every alias of ``DATABASES``."""
    from django.db import connections

    return all(entry.get("ENGINE") in ENGINES and (entry.get("OPTIONS") or {}).get("pool", True) is not False
               for entry in connections.settings.values())


def holds_connection(thread: threading.Thread) -> bool:
    """True if ``thread`` has a connection lent by one of this process's thread or green pools."""
    return any(pool.leases.held_by(thread) for pool in registry.sync_pools())
