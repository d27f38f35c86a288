"""Close the pools of a process that its ASGI server ends by re-raising SIGTERM.

uvicorn's ``Server.capture_signals()`` installs its handler for SIGTERM, serves, shuts down
gracefully, restores the handler it found and calls ``signal.raise_signal(SIGTERM)``, inside its
``serve()`` coroutine. In a ``uvicorn`` process, in its ``--workers`` children and under
gunicorn's ``UvicornWorker``, the handler it found is ``SIG_DFL``: the process dies there and
then, before the loop's teardown and ``atexit``, and PostgreSQL sees every pooled connection end
without a terminate message. hybridpool's :func:`~hybridpool.asgi.get_asgi_application` closes the
pools at the ASGI lifespan's shutdown, but an ``asgi.py`` with Django's own application (which
refuses the lifespan protocol) must be safe too.

The guard, installed once in the main thread while an event loop runs there, chains to the
SIGTERM handler it finds. At the first SIGTERM it blocks the signal in the main thread, then calls
that handler (the server's graceful shutdown, unchanged). The server's re-raise is thread-directed
(POSIX ``raise()`` is ``pthread_kill(pthread_self(), sig)``), so the signal stays pending: the loop
ends (its async pools closed by their guardians, :mod:`hybridpool.registry`), the interpreter
exits, and the guard's ``atexit`` callback closes the remaining pools, then unblocks the signal,
which POSIX delivers before ``pthread_sigmask`` returns: its disposition being ``SIG_DFL`` again,
the process dies by SIGTERM, with the exit status it had without the guard.

Bounds: only the main thread blocks the signal, so a SIGTERM sent again from outside (process-
directed) still kills at once. A daemon watchdog, once the server has re-raised, gives the process
:data:`GRACE_SECONDS` to exit (a non-daemon thread stuck in a query would hold it in
``threading._shutdown``); then it closes the pools, waiting at most :data:`CLOSE_SECONDS`, and
delivers the signal itself. SIGINT is left alone: uvicorn's re-raise of it becomes a
``KeyboardInterrupt`` that uvicorn catches, so the interpreter exits normally and runs ``atexit``.
Where the server's handler does not re-raise (hypercorn, daphne), the guard only closes the pools
at exit, as hybridpool's own ``atexit`` hook does. Nothing is installed without an event loop in
the main thread (gunicorn's gevent, gthread and sync workers, scripts).

Sources: uvicorn 0.55 ``uvicorn/server.py`` (``capture_signals``); POSIX ``raise()``,
``pthread_sigmask()`` and "Signal Generation and Delivery"; signal(7); CPython 3.11
``Py_FinalizeEx`` (``threading._shutdown`` runs before ``atexit``); asgiref 3.13
``SyncToAsync.thread_handler`` (``threadlocal.main_event_loop``).
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import Any

from . import process

logger = logging.getLogger("hybridpool")

#: The signal guarded: the one uvicorn re-raises with ``SIG_DFL`` as its disposition.
GUARDED = signal.SIGTERM

#: How long the process may take to exit once the server has re-raised the signal (s).
GRACE_SECONDS = 3.0

#: How long the watchdog waits for the pools to close before it delivers the signal (s).
CLOSE_SECONDS = 2.0

_POLL_SECONDS = 0.1
_installed_in: int | None = None  # the pid of the process the guard is installed in
_main_saw_pending = threading.Event()
_keep: set[asyncio.Task[None]] = set()


def install_soon(close: Callable[[], None]) -> None:
    """Install the guard, closing the pools with ``close``, if an event loop runs in the main
    thread and serves the calling code: at once from that thread, else scheduled on that loop from
    an asgiref ``sync_to_async`` thread (where Django's ORM runs under ASGI). Cheap after the
    first call in a process; call it wherever a pool is built."""
    if _installed_in == os.getpid():
        return
    loop: asyncio.AbstractEventLoop | None
    if threading.current_thread() is threading.main_thread():
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # not an asyncio server, or not serving yet
        _install(loop, close)
        return
    loop = _calling_loop()
    if loop is not None:
        try:
            loop.call_soon_threadsafe(_install_in_main_thread, loop, close)
        except RuntimeError:  # closed meanwhile
            pass


def _calling_loop() -> asyncio.AbstractEventLoop | None:
    """The event loop whose ``sync_to_async`` call runs this thread (asgiref's thread-local,
    private: read defensively; without it the guard is not installed)."""
    sync = sys.modules.get("asgiref.sync")
    local = getattr(getattr(sync, "SyncToAsync", None), "threadlocal", None)
    if local is None or getattr(local, "main_event_loop_pid", None) != os.getpid():
        return None
    loop = getattr(local, "main_event_loop", None)
    if not isinstance(loop, asyncio.AbstractEventLoop) or loop.is_closed():
        return None
    return loop


def _install_in_main_thread(loop: asyncio.AbstractEventLoop, close: Callable[[], None]) -> None:
    if threading.current_thread() is threading.main_thread() and _installed_in != os.getpid():
        _install(loop, close)


def _install(loop: asyncio.AbstractEventLoop, close: Callable[[], None]) -> None:
    """In the main thread, ``loop`` running in it."""
    global _installed_in
    _installed_in = os.getpid()
    previous = signal.getsignal(GUARDED)
    if not callable(previous):
        return  # SIG_DFL, SIG_IGN or a C handler: no graceful shutdown to chain to
    guard = _Guard(previous, close)
    signal.signal(GUARDED, guard.handle)
    atexit.register(guard.at_exit)
    # Created now, so that it inherits a mask without the signal blocked.
    threading.Thread(target=guard.watch, name="hybridpool-exit-guard", daemon=True).start()
    _keep.add(loop.create_task(_note_pending_at_loop_teardown()))
    logger.debug("exit guard installed over %r", previous)


class _Guard:
    """The handler chained in front of the server's, its ``atexit`` callback and its watchdog."""

    def __init__(self, previous: Callable[[int, FrameType | None], Any], close: Callable[[], None]) -> None:
        self.previous = previous
        self.close = close
        self.fired = threading.Event()

    def handle(self, signum: int, frame: FrameType | None) -> Any:
        if not self.fired.is_set():
            signal.pthread_sigmask(signal.SIG_BLOCK, {signum})  # the main thread's mask only
            self.fired.set()
        return self.previous(signum, frame)

    def at_exit(self) -> None:
        """Close the pools, then let the deferred signal through."""
        if not self.fired.is_set():
            return
        _note_pending()
        try:
            self.close_pools()
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {GUARDED})

    def close_pools(self) -> None:
        try:
            self.close()
        except Exception:  # the process still exits; say why a pool did not close
            logger.exception("closing the pools at exit failed")

    def watch(self) -> None:
        """Once the server has re-raised the signal, give the process :data:`GRACE_SECONDS` to
        exit; then close the pools and deliver the signal, if its disposition is still the
        server's ``SIG_DFL``."""
        self.fired.wait()
        while not _pending_in_main_thread():
            time.sleep(_POLL_SECONDS)
        time.sleep(GRACE_SECONDS)
        if signal.getsignal(GUARDED) != signal.SIG_DFL:
            return  # the server put a handler back: not ours to deliver
        logger.warning("the process did not exit %.1f s after its server's shutdown: closing the pools and ending"
                       " it by SIGTERM", GRACE_SECONDS)
        # The main thread may be stuck anywhere, even holding the registry's lock: close from
        # another thread, and wait for it a bounded time.
        closer = threading.Thread(target=self.close_pools, name="hybridpool-exit-close", daemon=True)
        closer.start()
        closer.join(CLOSE_SECONDS)
        os.kill(os.getpid(), GUARDED)  # process-directed: this thread, which does not block it, takes it


def _note_pending() -> None:
    """In the main thread: remember whether the guarded signal is pending there."""
    if GUARDED in signal.sigpending():
        _main_saw_pending.set()


async def _note_pending_at_loop_teardown() -> None:
    """Cancelled when the loop ends, after the server's ``serve()`` has returned (and re-raised)."""
    try:
        await asyncio.get_running_loop().create_future()
    finally:
        _note_pending()
        _keep.discard(asyncio.current_task())


def _pending_in_main_thread() -> bool:
    """Whether the guarded signal is pending in the main thread: on Linux read from
    ``/proc/self/task/<tid>/status`` (``SigPnd``, proc(5)), elsewhere as the main thread noted it."""
    try:
        with open(f"/proc/self/task/{threading.main_thread().native_id}/status") as status:
            for line in status:
                if line.startswith("SigPnd:"):
                    return bool(int(line.split()[1], 16) >> (GUARDED - 1) & 1)
    except (OSError, ValueError, TypeError):
        pass
    return _main_saw_pending.is_set()


@process.after_fork_in_child
def _unblock_in_child() -> None:
    """A child forked after the guard fired inherits the main thread's mask (fork(2)): undo it."""
    if _installed_in is not None:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {GUARDED})
