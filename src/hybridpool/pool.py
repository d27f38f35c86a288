"""The pool interface every driver implements, and what they share: error messages and log lines
(the stats keys are :mod:`hybridpool.stats`'s).

The verbs and their meaning are psycopg_pool's (``getconn``, ``putconn``, ``connection``, ``open``,
``close``, ``check``, ``get_stats``) so that code and dashboards written for psycopg_pool read a
hybridpool pool unchanged. Errors are psycopg_pool's own classes, subclasses of
:class:`psycopg.OperationalError`, which Django wraps as :class:`django.db.OperationalError`.
"""

from __future__ import annotations

import abc
import inspect
import os
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

import psycopg
from psycopg_pool import ConnectionPool, PoolClosed, PoolTimeout, TooManyRequests

from . import process, reset, steps
from .stats import POOL_AVAILABLE, POOL_MAX, POOL_SIZE, REQUESTS_WAITING

if TYPE_CHECKING:
    from .leases import Leases

__all__ = ["Pool", "AsyncPool", "PoolClosed", "PoolTimeout", "TooManyRequests"]



# Log lines every driver writes (the psycopg_pool driver's others are psycopg_pool's own, whose
# wording these follow).
#: INFO: a connection failed its check at checkout; it is closed and the checkout goes on with
#: another, within the caller's timeout.
FAILED_CHECK = "connection of pool %r failed check, replacing it: %s"
#: WARNING: a returned connection was broken, mid-query or could not be cleaned: it was closed.
DISCARDED_RETURN = "pool %r discarded a returned connection: %s"
#: WARNING: ``check()`` found an idle connection broken; it is closed and replaced.
BROKEN_IDLE = "discarding broken connection of pool %r: %s"
#: WARNING: opening a connection failed; it is retried with backoff.
CONNECT_FAILED = "error connecting in %r: %s"
#: WARNING: connecting failed for ``reconnect_timeout`` seconds: the pool stops refilling until
#: ``check()`` or a waiting caller asks for a connection again.
RECONNECT_GAVE_UP = "reconnection attempt in pool %r failed after %s sec"


#: The class of a driver's connections (psycopg_pool's ``connection_class``), by which the drivers'
#: pools are generic as psycopg_pool's are: ``ThreadPool[MyConnection]``. (:class:`Pool` is not: a
#: generic base would come before psycopg_pool's classes in the drivers' method resolution order.)
CT = TypeVar("CT", bound="psycopg.Connection[Any]")
ACT = TypeVar("ACT", bound="psycopg.AsyncConnection[Any]")

#: psycopg_pool's ``conninfo``: a libpq connection string, or a callable (a coroutine function
#: too, for the async pool) returning one for each new connection.
Conninfo = str | Callable[[], Any]
#: psycopg_pool's ``kwargs``: a dict of :func:`psycopg.connect` keyword arguments, or a callable
#: (a coroutine function too, for the async pool) returning one for each new connection.
Kwargs = dict[str, Any] | Callable[[], Any] | None


def autocommit_kwargs(kwargs: Kwargs) -> dict[str, Any] | Callable[[], Any]:
    """``kwargs`` with ``autocommit=True`` forced, in the same shape: every pooled connection is
    idle in autocommit. A callable (psycopg_pool 3.3's dynamic ``kwargs``, e.g. for credentials
    that rotate) is wrapped, and still called once per new connection."""
    if not callable(kwargs):
        return {**(kwargs or {}), "autocommit": True}
    if inspect.iscoroutinefunction(kwargs):
        async def aresolved() -> dict[str, Any]:
            return {**await kwargs(), "autocommit": True}

        return aresolved

    def resolved() -> dict[str, Any]:
        return {**kwargs(), "autocommit": True}

    return resolved


def describe(name: str, stats: dict[str, int]) -> str:
    """Describe a pool's load for an error message: name, ``max_size``, in use, waiting."""
    in_use = stats.get(POOL_SIZE, 0) - stats.get(POOL_AVAILABLE, 0)
    return (
        f"pool {name!r}: max_size={stats.get(POOL_MAX)}, {in_use} connections in use,"
        f" {stats.get(REQUESTS_WAITING, 0)} callers waiting"
    )


def timeout_error(name: str, stats: dict[str, int], timeout: float) -> PoolTimeout:
    """The :class:`PoolTimeout` raised by every driver when a caller waited ``timeout`` seconds."""
    return PoolTimeout(f"couldn't get a connection after {timeout:.2f} s from {describe(name, stats)}")


def too_many_requests_error(name: str, stats: dict[str, int], max_waiting: int) -> TooManyRequests:
    """The :class:`TooManyRequests` raised when ``max_waiting`` callers wait already."""
    return TooManyRequests(f"max_waiting={max_waiting} reached in {describe(name, stats)}")


def not_lent_error(name: str, conn: psycopg.BaseConnection[Any]) -> ValueError:
    """The :class:`ValueError` for a ``putconn`` of a connection the pool has not lent: another
    pool's, or one returned already (psycopg_pool refuses both with a ``ValueError`` too)."""
    owner = getattr(conn, "_pool", None)
    why = (f"it comes from pool {owner.name!r}" if owner is not None
           else "it is not lent by any pool (returned already?)")
    return ValueError(f"can't return connection to pool {name!r}, {why}: {conn}")


def closed_error(name: str, pid: int, *, opened: bool = True) -> PoolClosed:
    """The :class:`PoolClosed` for a pool not open (``opened``: it was, and has been closed), or
    for one used by a child of the process that created it (``pid``): a forked child never touches
    its parent's connections. psycopg_pool's wording."""
    if pid != os.getpid():
        return PoolClosed(
            f"pool {name!r} was created in process {pid} and cannot serve its child {os.getpid()}:"
            " create pools after fork (hybridpool.get_pool() does)"
        )
    return PoolClosed(f"the pool {name!r} is already closed" if opened else f"the pool {name!r} is not open yet")


def reopen_error(name: str) -> PoolClosed:
    """The :class:`PoolClosed` for ``open()`` on a pool that was closed (psycopg_pool's rule: a
    pool is opened once)."""
    return PoolClosed(f"pool {name!r} has already been opened/closed and cannot be reused")


def not_ready_error(name: str, timeout: float) -> PoolTimeout:
    """The :class:`PoolTimeout` of ``wait()``: ``min_size`` connections not ready in ``timeout`` s."""
    return PoolTimeout(f"pool {name!r} initialization incomplete after {timeout} sec")


class Owned:
    """What every pool, sync or async, is: a name, two sizes, and the process that created it,
    which alone may use its connections.

    A forked child (gunicorn's ``preload_app``, a ``multiprocessing`` fork) inherits the parent's
    pools with their sockets: closing one of those connections would end the parent's session,
    using one would mix two processes' traffic on one socket. So in a child a pool refuses to lend
    (:meth:`refuse_forked`: checkout raises), and returns and ``close()`` do nothing (the parent's
    connections are left untouched); its maintenance stops (:mod:`hybridpool.maintenance`).

    :ivar name: the pool's name (Django: the database alias).
    :ivar min_size: connections kept open.
    :ivar max_size: hard cap of open connections in this process.
    :ivar pid: the id of the process that created the pool (:data:`hybridpool.process.pid`).
    """

    name: str
    pid: int

    if TYPE_CHECKING:  # read-only as psycopg_pool's properties, which the psycopg_pool driver inherits
        @property
        def min_size(self) -> int: ...

        @property
        def max_size(self) -> int: ...

        @property
        def closed(self) -> bool: ...

    @property
    def forked(self) -> bool:
        """True in a child of the process that created the pool: read from
        :data:`hybridpool.process.pid`, renewed at fork, so the checkout path makes no system call."""
        return self.pid != process.pid

    def refuse_forked(self) -> None:
        """At checkout, in a forked child: raise.

        :raises PoolClosed: naming the process that created the pool (:func:`closed_error`).
        """
        if self.forked:
            raise closed_error(self.name, self.pid)


class Pool(Owned, abc.ABC):
    """A pool of :class:`psycopg.Connection` for code running on threads or greenlets.

    :ivar kwargs: the :func:`psycopg.connect` keyword arguments of its connections (psycopg_pool's).
    :ivar leases: who holds each lent connection (:class:`hybridpool.leases.Leases`).
    """

    kwargs: Kwargs
    leases: Leases

    @abc.abstractmethod
    def getconn(self, timeout: float | None = None) -> psycopg.Connection[Any]:
        """Take a connection, waiting at most ``timeout`` seconds (``None``: the pool's ``timeout``).

        :raises PoolTimeout: no connection within ``timeout``.
        :raises TooManyRequests: ``max_waiting`` callers wait already.
        :raises PoolClosed: the pool is closed.
        """

    @abc.abstractmethod
    def putconn(self, conn: psycopg.Connection[Any]) -> None:
        """Give back a connection taken with :meth:`getconn`; the pool cleans or closes it."""

    @contextmanager
    def connection(self, timeout: float | None = None) -> Iterator[psycopg.Connection[Any]]:
        """Lend a connection for a ``with`` block and take it back at the end.

        Lent connections are in autocommit, as Django's are: use ``with conn.transaction():`` for
        a transaction. Whatever is left open when the block ends is rolled back by the pool.
        """
        conn = self.getconn(timeout)
        try:
            with conn:
                yield conn
        finally:
            self.putconn(conn)

    @abc.abstractmethod
    def open(self, wait: bool = False, timeout: float = 30.0) -> None:
        """Open the pool and start filling it to ``min_size`` in the background.

        :param wait: block until ``min_size`` connections are ready.
        :raises PoolTimeout: ``wait`` and not ready within ``timeout`` seconds.
        """

    @abc.abstractmethod
    def close(self, timeout: float = 5.0) -> None:
        """Close the pool and its idle connections; lent ones are closed when returned.

        :param timeout: seconds to wait for background work to end.
        """

    @abc.abstractmethod
    def check(self) -> None:
        """Check every idle connection now; close and replace the broken ones."""

    @staticmethod
    def check_connection(conn: psycopg.Connection[Any]) -> None:
        """psycopg_pool's check, for a ``check`` setting: an empty query in autocommit, after
        reading the answer to a reset sent on return; the connection is left in the transaction
        state it was in.

        :raises psycopg.OperationalError: the connection is broken.
        """
        steps.run(reset.read(conn), conn)
        ConnectionPool.check_connection(conn)

    @abc.abstractmethod
    def get_stats(self) -> dict[str, int]:
        """Return the pool's gauges and counters under psycopg_pool's stats keys."""

    def __enter__(self) -> Pool:
        self.open()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc_val: BaseException | None,
                 exc_tb: TracebackType | None) -> None:
        self.close()


class AsyncPool(Owned, abc.ABC):
    """A pool of :class:`psycopg.AsyncConnection` bound to one running event loop.

    The same verbs as :class:`Pool`, awaitable.
    """

    @abc.abstractmethod
    async def getconn(self, timeout: float | None = None) -> psycopg.AsyncConnection[Any]:
        """Take a connection; see :meth:`Pool.getconn`."""

    @abc.abstractmethod
    async def putconn(self, conn: psycopg.AsyncConnection[Any]) -> None:
        """Give back a connection; see :meth:`Pool.putconn`."""

    @asynccontextmanager
    async def connection(self, timeout: float | None = None) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        """Lend a connection for an ``async with`` block; see :meth:`Pool.connection`."""
        conn = await self.getconn(timeout)
        try:
            async with conn:
                yield conn
        finally:
            await self.putconn(conn)

    @abc.abstractmethod
    async def open(self, wait: bool = False, timeout: float = 30.0) -> None:
        """Open the pool in the running loop; see :meth:`Pool.open`."""

    @abc.abstractmethod
    async def close(self, timeout: float = 5.0) -> None:
        """Close the pool; see :meth:`Pool.close`."""

    @abc.abstractmethod
    async def check(self) -> None:
        """Check every idle connection; see :meth:`Pool.check`."""

    @abc.abstractmethod
    def get_stats(self) -> dict[str, int]:
        """Return the pool's stats; see :meth:`Pool.get_stats`."""
