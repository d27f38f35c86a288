"""hybridpool's ASGI application: Django's, with reused request threads and the lifespan protocol.

**Reused request threads.** Django's ASGI handler runs every sync part of a request (sync
middleware, request signals' sync receivers, each ``a*`` ORM call through ``sync_to_async``) in
one thread made for that request and ended after it (asgiref's ``ThreadSensitiveContext``,
Django 4.0+). :class:`Application` enters, around Django's handler, a ``ThreadSensitiveContext``
whose executor is a single-thread executor of :class:`RequestThreads`, a set kept for the
process: Django's own, inner context then uses that thread (only the outer-most context sets it),
so a request's sync parts still all run on one thread that serves no other request at once, as
under Django, and the thread serves the next request after it. Thread-local state therefore lives
from one request to the next, as under gunicorn's gthread worker. It needs asgiref 3.13
(``ThreadSensitiveContext(executor=...)``); with an older asgiref every request runs as Django runs
it, and a warning says so (also system check ``hybridpool.W004``).

**Lifespan.** uvicorn ends its process by re-raising the SIGTERM it received, which skips
``atexit``; the ASGI lifespan protocol is the server's way to tell the application it stops, and
Django's handler refuses it. At ``lifespan.startup`` the running loop is marked as the server's
(its async pools keep ``min_size`` connections), at ``lifespan.shutdown`` the process's pools are
closed while the loop still runs, and the request threads are ended.

Source: the ASGI lifespan specification, https://asgi.readthedocs.io/en/latest/specs/lifespan.html;
asgiref 3.13's ``ThreadSensitiveContext`` (``asgiref/sync.py``); Django's ``ASGIHandler.__call__``.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import threading
from collections.abc import Awaitable, Callable, MutableMapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from asgiref.sync import ThreadSensitiveContext

from . import signals

logger = logging.getLogger("hybridpool")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]], Awaitable[None]]

#: True if this asgiref lets a ``ThreadSensitiveContext`` run on a caller's executor (3.13+).
REUSABLE_THREADS = "executor" in inspect.signature(ThreadSensitiveContext).parameters

#: Request threads kept for reuse per process, by default: as many requests in flight as this
#: reuse a thread each; beyond, a request gets a thread of its own, as under Django.
DEFAULT_THREADS = 100

#: The ASGI scopes whose sync parts Django runs in a request thread.
REQUEST_SCOPES = frozenset({"http", "websocket"})


class RequestThread:
    """A single-thread executor, lent to one request at once, and its thread once started (the
    executor starts it at its first task)."""

    __slots__ = ("executor", "thread")

    def __init__(self) -> None:
        self.thread: threading.Thread | None = None
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hybridpool-request",
                                           initializer=self._started)

    def _started(self) -> None:
        self.thread = threading.current_thread()


class RequestThreads:
    """Request threads kept for reuse, at most ``size``, each lent to one request at once.

    Used from the event loop's thread only (no lock). A request that finds them all lent gets
    none, and runs as under Django, in a thread made for it: nothing waits for a thread.

    :param size: threads kept at most (>= 0; 0: none, every request as under Django).
    """

    def __init__(self, size: int) -> None:
        if type(size) is not int or size < 0:
            raise ValueError(f"threads = {size!r}: must be an int >= 0")
        self.size = size
        self._idle: list[RequestThread] = []
        self._made = 0

    def take(self) -> RequestThread | None:
        """The most recently used idle thread, a new one while fewer than ``size`` exist, or None."""
        if self._idle:
            return self._idle.pop()
        if self._made < self.size:
            self._made += 1
            return RequestThread()
        return None

    def give_back(self, worker: RequestThread, reusable: bool) -> None:
        """Take back ``worker`` after its request; one whose request did not end normally may
        still be running its sync code: it is shut down (its thread ends when that returns)."""
        if reusable:
            self._idle.append(worker)
        else:
            self._made -= 1
            worker.executor.shutdown(wait=False)

    def shutdown(self) -> None:
        """End the idle threads (those lent end when their request gives them back)."""
        while self._idle:
            self._made -= 1
            self._idle.pop().executor.shutdown(wait=False)


class Application:
    """Wrap Django's ASGI application: run each request's sync parts on a reused thread
    (:class:`RequestThreads`) and answer the ``lifespan`` events.

    :param app: the ASGI application, Django's ``ASGIHandler``.
    :param threads: request threads kept for reuse (>= 0, default :data:`DEFAULT_THREADS`).
    """

    def __init__(self, app: ASGIApp, threads: int = DEFAULT_THREADS) -> None:
        self.app = app
        self.threads = RequestThreads(threads)
        if REUSABLE_THREADS and threads:
            signals.install()
        if not REUSABLE_THREADS:
            self.threads.size = 0
            logger.warning("asgiref %s cannot lend a request thread (ThreadSensitiveContext(executor=...) is"
                           " asgiref 3.13's): each request gets a thread of its own, as under Django",
                           _asgiref_version())

    async def __call__(self, scope: Scope, receive: Callable[[], Awaitable[Message]],
                       send: Callable[[Message], Awaitable[None]]) -> None:
        if scope["type"] == "lifespan":
            return await self._lifespan(receive, send)
        worker = self.threads.take() if scope["type"] in REQUEST_SCOPES else None
        if worker is None:
            return await self.app(scope, receive, send)
        ended = False
        token = signals.request_thread.set(worker)
        try:
            async with ThreadSensitiveContext(executor=worker.executor):
                await self.app(scope, receive, send)
            ended = True
        finally:
            signals.request_thread.reset(token)
            self.threads.give_back(worker, reusable=ended)

    async def _lifespan(self, receive: Callable[[], Awaitable[Message]],
                        send: Callable[[Message], Awaitable[None]]) -> None:
        from .. import registry

        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                registry.serving(asyncio.get_running_loop())
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                self.threads.shutdown()
                try:
                    await registry.aclose_all()
                except Exception as ex:  # the server still shuts down; say why a pool did not close
                    logger.exception("closing the pools at shutdown failed")
                    await send({"type": "lifespan.shutdown.failed", "message": str(ex)})
                else:
                    await send({"type": "lifespan.shutdown.complete"})
                return


def _asgiref_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("asgiref")
    except PackageNotFoundError:
        return "(unknown version)"


def get_asgi_application(threads: int = DEFAULT_THREADS) -> Application:
    """Django's ASGI application (``django.core.asgi.get_asgi_application()``) with reused request
    threads and the lifespan protocol: use it in ``asgi.py``.

    :param threads: request threads kept for reuse per process (>= 0; default
        100, ``DEFAULT_THREADS``): that many requests in flight reuse a thread each, the others get
        a thread of their own, as under Django; nothing waits for a thread.
    :raises ValueError: ``threads`` is not an int >= 0.
    """
    from django.core.asgi import get_asgi_application as django_application

    return Application(django_application(), threads)  # type: ignore[arg-type]  # django-stubs type its scope as a dict
