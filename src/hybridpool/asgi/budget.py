"""One ``max_size`` per (alias, process) for the async pools of every event loop.

An async pool serves one event loop (:class:`~hybridpool.asgi.LoopPool`), and a process may run
several: asgiref's ``async_to_sync`` outside a running loop makes a new one per call (Django's
async views under a WSGI server, sync code calling async code), each in a thread of its own. A
pool per loop, each capped at ``max_size``, would let N loops open N x ``max_size`` connections.
:class:`ConnectionBudget` is the cap they share: a connection is opened only once the budget
grants it a unit, and the unit comes back when the connection is closed, or collected.

It is a semaphore whose waiters may sit in different event loops, each awoken in its own
(``call_soon_threadsafe``), first come first served; the decisions are taken under a lock, so a
waiter that gives up just as it is granted a unit gives it back. A caller that has to wait asks
the pools holding units to close one idle connection each, so that a loop that lives on does not
keep connections idle that another loop waits for.
"""

from __future__ import annotations

import asyncio
import os
import select
import threading
import traceback
import weakref
from collections import deque
from typing import Any, ClassVar

import psycopg


class ConnectionBudget:
    """At most ``limit`` connections at once across the event loops of this process.

    :param limit: the alias's ``max_size``.
    :param name: names the budget in errors (the alias).
    """

    def __init__(self, limit: int, name: str) -> None:
        self.limit = limit
        self.name = name
        self.taken = 0
        self._lock = threading.Lock()
        self._waiting: deque[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = deque()
        self._holders: weakref.WeakSet[Any] = weakref.WeakSet()

    def hold(self, holder: Any) -> None:
        """Register a pool whose idle connections may be asked back (its ``shed_soon()``, callable
        from any thread) when a caller waits for a unit: otherwise a pool of a loop that lives on
        would keep idle connections that another loop's callers wait for."""
        self._holders.add(holder)

    async def acquire(self, timeout: float) -> None:
        """Take a unit, waiting at most ``timeout`` seconds behind the callers already waiting.

        :raises psycopg.OperationalError: none was free within ``timeout``.
        """
        loop = asyncio.get_running_loop()
        with self._lock:
            if self.taken < self.limit and not self._waiting:
                self.taken += 1
                return
            waiter: asyncio.Future[None] = loop.create_future()
            self._waiting.append((loop, waiter))
            holders = list(self._holders)
        for holder in holders:
            holder.shed_soon()
        try:
            await asyncio.wait_for(asyncio.shield(waiter), timeout)
        except BaseException as ex:
            with self._lock:
                try:
                    self._waiting.remove((loop, waiter))
                    granted = False
                except ValueError:  # granted meanwhile: the unit is this caller's to give back
                    granted = True
            if granted:
                self.release()
            if isinstance(ex, asyncio.TimeoutError):
                raise psycopg.OperationalError(
                    f"no connection could be opened within {timeout:.2f} s: the async pools of {self.name!r}"
                    f" in this process hold max_size={self.limit} connections") from None
            raise

    def release(self) -> None:
        """Give a unit back: to the oldest waiter whose loop still runs, else to the budget."""
        with self._lock:
            while self._waiting:
                loop, waiter = self._waiting.popleft()
                try:
                    loop.call_soon_threadsafe(_grant, waiter)
                except RuntimeError:  # its loop is closed: nobody waits there any more
                    continue
                return
            self.taken -= 1


def _grant(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


#: Longest wait for the server to end a backend whose connection was closed, before its unit is
#: given back anyway (s). A backend ends within milliseconds; on a loaded 2-core machine 1 s was
#: seen not to be enough (the server refused a connection the budget had allowed).
BACKEND_EXIT_TIMEOUT = 5.0
#: How long after a connection attempt is cancelled its unit is given back (s): the server ends
#: the backend it was starting once it sees the socket closed, within milliseconds.
ABORTED_CONNECT_GRACE = 0.2


class BudgetedConnection(psycopg.AsyncConnection[Any]):
    """A :class:`psycopg.AsyncConnection` that takes a unit of its class's :attr:`budget` to open
    and gives it back once it is closed and its server process has ended, or once it is collected.

    The server counts a backend until its process exits, a moment after the terminate message
    (``CONNECTION LIMIT`` and ``max_connections`` see it); a unit given back at once could let
    another loop connect within that moment and pass ``max_size`` as the server counts. So a
    closed connection's socket is watched (a duplicate of it) until the server closes its end,
    which it does as its process exits. :func:`budgeted` makes the class of a pool.
    """

    budget: ClassVar[ConnectionBudget]
    #: Longest wait for a unit (s): the pool's ``timeout``.
    budget_timeout: ClassVar[float]
    #: Its safe reset may wait for the next statement (:mod:`hybridpool.cursors`): the async pool
    #: lends it so only to ``NativeQuerySet``'s reads, and resets it for any other borrower.
    carries_reset = True
    #: Gives the unit back, once: when the connection is closed, or collected (set by :meth:`connect`).
    _give_back_unit: weakref.finalize[[], BudgetedConnection]

    @classmethod
    async def connect(cls, conninfo: str = "", **kwargs: Any) -> Any:
        await cls.budget.acquire(cls.budget_timeout)
        try:
            conn = await super().connect(conninfo, **kwargs)
        except BaseException as ex:
            if isinstance(ex, Exception):  # refused, or no server: no backend counts it
                cls.budget.release()
                raise
            # Cancelled mid-connect (an ending loop cancels its pool's connection attempts):
            # psycopg's connection in the making is freed and its socket closed now, but the
            # server may still count the backend it was starting: the unit comes back a moment
            # later, when that backend has seen the socket close and ended.
            traceback.clear_frames(ex.__traceback__)
            timer = threading.Timer(ABORTED_CONNECT_GRACE, cls.budget.release)
            timer.daemon = True
            timer.start()
            raise
        conn._give_back_unit = weakref.finalize(conn, cls.budget.release)
        return conn

    async def close(self) -> None:
        if self.closed or getattr(self, "_pool", None) is not None:  # closed already, or lent: returned
            await super().close()
            if self.closed:
                self._give_back_unit()
            return
        watched = os.dup(self.pgconn.socket)
        try:
            await super().close()
            await _server_end_closed(watched)
        finally:
            os.close(watched)
            self._give_back_unit()

    def close_now(self) -> None:
        """Close without awaiting, for a connection whose event loop is ending or gone; the
        server's end is waited for, briefly, blocking."""
        if self.closed:
            self._give_back_unit()
            return
        watched = os.dup(self.pgconn.socket)
        try:
            self._closed = True
            self.pgconn.finish()
            _poll([watched], BACKEND_EXIT_TIMEOUT)
        finally:
            os.close(watched)
            self._give_back_unit()


async def _server_end_closed(fd: int) -> None:
    """Wait, at most :data:`BACKEND_EXIT_TIMEOUT` seconds, until the peer closes ``fd``'s socket."""
    loop = asyncio.get_running_loop()
    closed: asyncio.Future[None] = loop.create_future()
    loop.add_reader(fd, _grant, closed)
    try:
        await asyncio.wait_for(closed, BACKEND_EXIT_TIMEOUT)
    except asyncio.TimeoutError:
        pass
    finally:
        loop.remove_reader(fd)


def _poll(fds: list[int], timeout: float) -> None:
    """Block until each of ``fds`` is readable (its peer closed it) or ``timeout`` seconds pass."""
    poller = select.poll()
    for fd in fds:
        poller.register(fd, select.POLLIN)
    poller.poll(timeout * 1000.0)


def budgeted(budget: ConnectionBudget, timeout: float) -> type[BudgetedConnection]:
    """The connection class of the async pools that share ``budget``, waiting at most ``timeout``
    seconds for a unit."""
    return type("BudgetedConnection", (BudgetedConnection,), {"budget": budget, "budget_timeout": timeout})
