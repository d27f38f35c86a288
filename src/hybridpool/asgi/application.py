"""hybridpool's ASGI application: Django's, with reused request threads and the lifespan protocol.

**Reused request threads.** Django's ASGI handler runs every sync part of a request (sync
middleware, request signals' sync receivers, each ``a*`` ORM call through ``sync_to_async``) in
one thread made for that request and ended after it (asgiref's ``ThreadSensitiveContext``,
Django 4.0+). :class:`Application` enters, around Django's handler, a ``ThreadSensitiveContext``
whose executor (:class:`RequestExecutor`) runs every call on one thread of :class:`RequestThreads`,
a set kept for the process: Django's own, inner context then uses that thread (only the outer-most
context sets it),
so a request's sync parts still all run on one thread that serves no other request at once, as
under Django, and the thread serves the next request after it. Thread-local state therefore lives
from one request to the next, as under gunicorn's gthread worker. It needs asgiref 3.13
(``ThreadSensitiveContext(executor=...)``); with an older asgiref every request runs as Django runs
it, and a warning says so (also system check ``hybridpool.W004``).

**A bounded set, lent late, and a bounded wait.** A request is lent a thread at its first sync
part, not at its start (:class:`RequestExecutor`), and holds it until it ends. A request whose
only sync part is Django's ``response.close()`` (async middleware and views, ``NativeQuerySet``
reads) takes none: its response is closed on the event loop where that does what the thread
would (:func:`hybridpool.asgi.signals.close_on_loop`), else it is lent one for that step only. A
request that finds every kept thread lent waits on the event loop, first come first served, for
the next one given back, at most ``thread_timeout`` seconds;
past that it runs in a thread made for it, as under Django: no request fails or hangs for want of
a thread. Fewer threads than requests in flight is the point: beyond the pool's connections a
request thread would only wait for one, blocked in the pool, and every thread awake contends for
the GIL. Measured with ``python -m bench.e2e`` (uvicorn, one ``afirst()``, 100 clients,
``max_size`` 20, 5 rounds, ratios to Django's pool within a round): with a thread per request in
flight, 1.14x its requests/s at 0.83x its CPU per request (``bench/results/e2e-20261205T132238Z.md``);
with 20 kept threads lent at the request's start, 1.36x at 0.74x, but ``NativeQuerySet`` fell from
1.58x to 1.33x (``e2e-20261205T160721Z.md``); lent late, 1.32x at 0.79x, and ``NativeQuerySet``
1.65x at 0.62x (``e2e-20261205T161257Z.md``); with no thread for a native request's
``response.close()``, ``NativeQuerySet`` 1.59-1.90x at 0.55-0.64x, the application unchanged
(1.23-1.36x at 0.81-0.83x: two runs, ``e2e-20261205T194928Z.md``, ``e2e-20261205T195147Z.md``).

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
from collections import deque
from collections.abc import Awaitable, Callable, MutableMapping
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from functools import partial
from typing import Any

from asgiref.sync import ThreadSensitiveContext

from ..validation import check_int, check_seconds
from . import signals

logger = logging.getLogger("hybridpool")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]], Awaitable[None]]

#: True if this asgiref lets a ``ThreadSensitiveContext`` run on a caller's executor (3.13+).
REUSABLE_THREADS = "executor" in inspect.signature(ThreadSensitiveContext).parameters

#: Request threads kept per process, by default: as many requests in flight run their sync parts
#: at once, the others wait for one of them (module doc). About a pool's ``max_size`` (the bench
#: runs 20): a request thread beyond the connections would wait in the pool.
DEFAULT_THREADS = 20

#: Longest wait of a request for a kept thread, by default (s); then it gets a thread of its own.
DEFAULT_THREAD_TIMEOUT = 1.0

#: Where the thread settings are given, for their errors.
WHERE = "hybridpool.asgi.get_asgi_application()"

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

    Used from the event loop's thread only (no lock). A request that finds them all lent waits,
    first come first served, for the next one given back (:class:`RequestExecutor`): a thread
    given back goes to the oldest waiter directly, so a request arriving later cannot take it first.

    :param size: threads kept at most (>= 0; 0: none, every request as under Django).
    :param timeout: longest wait for a thread (s, >= 0); 0: none.
    :raises PoolSettingError: ``size`` or ``timeout`` out of range (a ``ValueError``).
    """

    def __init__(self, size: int, timeout: float = DEFAULT_THREAD_TIMEOUT) -> None:
        self.size = check_int(WHERE, "threads", size, minimum=0)
        self.timeout = float(check_seconds(WHERE, "thread_timeout", timeout, zero=True))
        self._idle: list[RequestThread] = []
        self._made = 0
        self._waiting: deque[RequestExecutor] = deque()
        #: Requests that waited ``timeout`` for a thread in vain and ran in one of their own.
        self.overflowed = 0

    def take(self) -> RequestThread | None:
        """The most recently used idle thread, a new one while fewer than ``size`` exist, or None."""
        if self._idle:
            return self._idle.pop()
        if self._made < self.size:
            self._made += 1
            return RequestThread()
        return None

    def wait(self, executor: RequestExecutor) -> None:
        """Queue ``executor``'s request for the next thread given back."""
        self._waiting.append(executor)

    def stop_waiting(self, executor: RequestExecutor) -> None:
        """Take ``executor``'s request out of the queue, if it is in it."""
        if executor in self._waiting:
            self._waiting.remove(executor)

    def give_back(self, worker: RequestThread, reusable: bool) -> None:
        """Take back ``worker`` after its request, for the oldest waiter or the idle ones; one
        whose request did not end normally may still be running its sync code: it is shut down
        (its thread ends when that returns), and a waiter gets a new thread in its place."""
        if not reusable:
            self._made -= 1
            worker.executor.shutdown(wait=False)
            replacement = self.take() if self._waiting else None
            if replacement is None:
                return
            worker = replacement
        if self._waiting:
            self._waiting.popleft().start(worker)
        else:
            self._idle.append(worker)

    def shutdown(self) -> None:
        """End the idle threads (those lent end when their request gives them back)."""
        while self._idle:
            self._made -= 1
            self._idle.pop().executor.shutdown(wait=False)


class RequestExecutor(Executor):
    """One request's executor, the one its ``ThreadSensitiveContext`` runs every sync part on: a
    kept thread, lent at the request's first sync call rather than at its start, so that a
    request with little sync work (``NativeQuerySet`` reads, async middleware: Django's
    ``response.close()`` at the end) holds one for that little only.

    The first call takes a thread (:meth:`RequestThreads.take`), or waits for one given back, at
    most the set's ``timeout``, and then gets a thread made for the request alone; calls made
    meanwhile are queued, in order. Called on the event loop's thread only (asyncio's
    ``run_in_executor``), as :class:`RequestThreads`.
    """

    def __init__(self, threads: RequestThreads) -> None:
        self.threads = threads
        #: The thread running the request's sync parts, once lent; None until then.
        self.worker: RequestThread | None = None
        self._own = False  # a thread made for this request alone: ended with it
        self._queued: list[tuple[Future[Any], Callable[..., Any], tuple[Any, ...], dict[str, Any]]] = []
        self._timer: asyncio.TimerHandle | None = None

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        if self.worker is None and not self._queued:
            if not args and not kwargs and (close := signals.close_on_loop(fn)) is not None:
                return _run_here(close)  # Django's response.close(), where no thread is needed for it
            if (worker := self.threads.take()) is not None:
                self.start(worker)
        if self.worker is not None:
            return self.worker.executor.submit(fn, *args, **kwargs)
        future: Future[Any] = Future()
        self._queued.append((future, fn, args, kwargs))
        if len(self._queued) == 1:  # the first call, and no thread free: wait for one
            if self.threads.timeout:
                self.threads.wait(self)
                self._timer = asyncio.get_running_loop().call_later(self.threads.timeout, self._waited_in_vain)
            else:
                self._waited_in_vain()
        return future

    def start(self, worker: RequestThread) -> None:
        """Run the request's sync parts on ``worker`` from now on, the queued calls first. A kept
        thread that still holds a pooled connection (a request that did not give it back) first
        runs Django's ``request_started`` receivers, as Django would at the request's start
        (:mod:`hybridpool.asgi.signals`)."""
        self.worker = worker
        if self._timer is not None:
            self._timer.cancel()
        if worker.thread is not None and signals.holds_connection(worker.thread):
            worker.executor.submit(signals.django_receivers)
        queued, self._queued = self._queued, []
        for future, fn, args, kwargs in queued:
            if future.set_running_or_notify_cancel():
                worker.executor.submit(fn, *args, **kwargs).add_done_callback(partial(_settle, future))

    def _waited_in_vain(self) -> None:
        self.threads.stop_waiting(self)
        if not self.threads.overflowed:
            logger.warning("a request waited thread_timeout=%s s for one of the %s request threads, all lent: it runs"
                           " in a thread of its own; so do the next ones that wait as long (counted in"
                           " Application.threads.overflowed)", self.threads.timeout, self.threads.size)
        self.threads.overflowed += 1
        self._own = True
        self.start(RequestThread())

    def release(self, reusable: bool) -> None:
        """The request ended (``reusable``: normally): give its thread back, or end the one made for
        it; a request still waiting leaves the queue."""
        if self._timer is not None:
            self._timer.cancel()
        if self.worker is None:
            self.threads.stop_waiting(self)
            for future, *_ in self._queued:
                future.cancel()
        elif self._own:
            self.worker.executor.shutdown(wait=False)
        else:
            self.threads.give_back(self.worker, reusable)


def _run_here(call: Callable[[], Any]) -> Future[Any]:
    """Run ``call`` now, in the calling thread; return a future holding its outcome."""
    future: Future[Any] = Future()
    try:
        future.set_result(call())
    except BaseException as error:  # noqa: BLE001 - the call's outcome, handed on as a thread's would be
        future.set_exception(error)
    return future


def _settle(future: Future[Any], done: Future[Any]) -> None:
    """Give ``future`` the outcome of ``done``, the call it stood for (its cancellation too)."""
    try:
        result = done.result()
    except BaseException as error:  # noqa: BLE001 - the call's outcome, handed on
        future.set_exception(error)
    else:
        future.set_result(result)


class Application:
    """Wrap Django's ASGI application: run each request's sync parts on a reused thread
    (:class:`RequestThreads`) and answer the ``lifespan`` events.

    :param app: the ASGI application, Django's ``ASGIHandler``.
    :param threads: request threads kept for reuse (>= 0, default :data:`DEFAULT_THREADS`).
    :param thread_timeout: longest wait of a request for one of them (s, >= 0, default
        :data:`DEFAULT_THREAD_TIMEOUT`).
    :raises PoolSettingError: ``threads`` or ``thread_timeout`` out of range (a ``ValueError``).
    """

    def __init__(self, app: ASGIApp, threads: int = DEFAULT_THREADS,
                 thread_timeout: float = DEFAULT_THREAD_TIMEOUT) -> None:
        self.app = app
        self.threads = RequestThreads(threads, thread_timeout)
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
        if scope["type"] not in REQUEST_SCOPES or not self.threads.size:
            return await self.app(scope, receive, send)
        executor = RequestExecutor(self.threads)
        ended = False
        token = signals.request_thread.set(executor)
        try:
            async with ThreadSensitiveContext(executor=executor):
                await self.app(scope, receive, send)
            ended = True
        finally:
            signals.request_thread.reset(token)
            executor.release(reusable=ended)

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


def get_asgi_application(threads: int = DEFAULT_THREADS,
                         thread_timeout: float = DEFAULT_THREAD_TIMEOUT) -> Application:
    """Django's ASGI application (``django.core.asgi.get_asgi_application()``) with reused request
    threads and the lifespan protocol: use it in ``asgi.py``.

    :param threads: request threads kept per process (>= 0; default 20, ``DEFAULT_THREADS``):
        that many requests in flight run their sync parts at once, each on a thread of its own;
        set it to about the ``max_size`` of the pool they use, and count in it the requests that
        hold their thread long (a streaming response holds it until its end). 0: every request
        runs as under Django, in a thread made for it.
    :param thread_timeout: longest wait of a request for one of them (s, >= 0; default 1.0,
        ``DEFAULT_THREAD_TIMEOUT``); past it the request runs in a thread made for it, as under
        Django. 0: no wait.
    :raises PoolSettingError: ``threads`` is not an int >= 0, or ``thread_timeout`` not a number of
        seconds >= 0 (a ``ValueError`` and Django's ``ImproperlyConfigured``).
    """
    from django.core.asgi import get_asgi_application as django_application

    return Application(django_application(), threads, thread_timeout)  # type: ignore[arg-type]  # django-stubs type its scope as a dict
