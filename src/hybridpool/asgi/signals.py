"""Thread hops saved per request: Django's ``request_started`` receivers, decided on the loop, and
``response.close()`` run there when no thread is needed for it.

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

**``response.close()`` on the loop.** Django's handler ends each request with
``sync_to_async(response.close)()``: a hop to the request thread, to close the request's body
buffer and send ``request_finished``, whose receivers Django connects are
``close_old_connections`` (the thread's database connections), ``close_caches`` and
``reset_urlconf``. A request that no thread served (async middleware and views, ``NativeQuerySet``
reads) would be lent one for that call alone. :func:`close_on_loop` lets
:class:`~hybridpool.asgi.application.RequestExecutor` run it on the event loop instead, where it
does what it would do in a thread, and only then:

- no thread was lent to the request: none holds a connection of its, and the loop's thread holds
  none unless ``DJANGO_ALLOW_ASYNC_UNSAFE`` is set (Django refuses to connect there otherwise),
  so the thread's ``close_old_connections`` would have had nothing to close, nor has the loop's;
- the response does not override ``close()`` and closes nothing but Django's request (no file,
  no stream of its own);
- ``request_finished`` has Django's three receivers only, no async one and none of the project's;
- ``response.close()`` was not called while an exception is handled.

Caches are shared by the request's context and its thread (a context-local, not a thread-local,
in Django), so ``close_caches`` closes the same ones either way. The call runs in the context
asgiref copied for it, as in the thread, and asgiref carries what it changed back (the URLconf
``reset_urlconf`` resets). Anything else takes a thread, as before. Measured with ``python -m bench.e2e``
(uvicorn, one ``afirst()`` through ``NativeQuerySet`` per request, 5 rounds, ratios to Django's
pool within a round): with the hop, 1.23x its requests/s at 10 clients and 1.65x at 100, at 0.85x
and 0.62x its CPU per request (``bench/results/e2e-20261205T161257Z.md``); without it, 1.48x and
1.59-1.90x, at 0.66-0.68x and 0.55-0.64x (two runs, ``e2e-20261205T194928Z.md`` and
``e2e-20261205T195147Z.md``). The hop costs a thread's wake-up, the loop's wake-up by that thread
and two handovers of the GIL; counted in instructions it is the cheaper path (about 12k fewer
than the checks and the call on the loop), which is why instructions alone misjudge it.

Source: Django's ``Signal.asend`` (``django/dispatch/dispatcher.py``: sync receivers run in one
``sync_to_async`` call, async ones on the loop), ``ASGIHandler.handle`` and
``HttpResponseBase.close`` (``django/http/response.py``); asgiref 3.13's ``SyncToAsync.__call__``,
which hands its executor ``partial(thread_handler, loop, exc_info, task_context, func, child)``:
``func(child)`` runs ``child`` in the copied context.
"""

from __future__ import annotations

import contextvars
import os
import threading
from collections.abc import Callable
from functools import cache, partial
from typing import Any, NamedTuple

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


def close_on_loop(call: Any) -> Callable[[], Any] | None:
    """If ``call`` (a sync part asgiref hands the executor of a request that has no thread yet) is
    Django's ``response.close()``, and running it on the event loop does what it would do in a
    request thread (module docstring), return a function of no argument that runs it as the
    thread would: in the context asgiref copied for it. Else None: the call takes a thread.

    :param call: what asgiref's ``SyncToAsync`` submits: ``partial(thread_handler, loop,
        exc_info, task_context, func, child)`` in asgiref 3.13; any other shape gives None.
    """
    if getattr(getattr(call, "func", None), "__name__", None) != "thread_handler" or len(call.args) != 5:
        return None
    exc_info, run_in_context, child = call.args[1], call.args[3], call.args[4]
    django = _django()
    close = getattr(child, "func", None)
    response = getattr(close, "__self__", None)
    if (not isinstance(child, partial) or child.args or child.keywords or exc_info[1] is not None
            or not isinstance(response, django.HttpResponseBase)
            or getattr(close, "__func__", None) is not django.HttpResponseBase.close  # not a subclass's own
            or not _closes_the_request_only(response, django) or not _finished_receivers_are_django_s(response, django)
            # Only then may the loop's thread hold a connection, which the thread's receivers would not close.
            or os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")):
        return None
    return partial(run_in_context, child)


class _Django(NamedTuple):
    HttpResponseBase: Any
    ASGIRequest: Any
    request_finished: Any
    receivers: tuple[Any, ...]  # Django's own request_finished receivers


@cache
def _django() -> _Django:
    """What :func:`close_on_loop` compares with, imported once, at first use (Django is set up by then)."""
    from django.core.cache import close_caches
    from django.core.handlers.asgi import ASGIRequest
    from django.core.handlers.base import reset_urlconf
    from django.core.signals import request_finished
    from django.db import close_old_connections
    from django.http import HttpResponseBase

    return _Django(HttpResponseBase, ASGIRequest, request_finished, (close_old_connections, close_caches, reset_urlconf))


def _closes_the_request_only(response: Any, django: _Django) -> bool:
    """True if what ``response.close()`` closes first is Django's ASGI request alone (its body
    buffer, its uploaded files: Django's handler adds it), not a file or stream of the response."""
    closers = getattr(response, "_resource_closers", None)
    request_close = django.ASGIRequest.close
    return closers is not None and all(getattr(closer, "__func__", None) is request_close for closer in closers)


def _finished_receivers_are_django_s(response: Any, django: _Django) -> bool:
    """True if ``request_finished`` would run Django's own sync receivers only."""
    sync_receivers, async_receivers = django.request_finished._live_receivers(getattr(response, "_handler_class", None))
    return not async_receivers and all(receiver in django.receivers for receiver in sync_receivers)
