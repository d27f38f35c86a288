"""The pool interface every driver implements, and what they share: stats keys and error messages.

The verbs and their meaning are psycopg_pool's (``getconn``, ``putconn``, ``connection``, ``open``,
``close``, ``check``, ``get_stats``) so that code and dashboards written for psycopg_pool read a
hybridpool pool unchanged. Errors are psycopg_pool's own classes, subclasses of
:class:`psycopg.OperationalError`, which Django wraps as :class:`django.db.OperationalError`.
"""

from __future__ import annotations

import abc
import os
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import psycopg
from psycopg_pool import PoolClosed, PoolTimeout, TooManyRequests

__all__ = ["Pool", "AsyncPool", "PoolClosed", "PoolTimeout", "TooManyRequests"]

# psycopg_pool's stats keys (psycopg_pool.base.BasePool), used by every driver.
POOL_MIN = "pool_min"
POOL_MAX = "pool_max"
POOL_SIZE = "pool_size"
POOL_AVAILABLE = "pool_available"
REQUESTS_WAITING = "requests_waiting"
REQUESTS_NUM = "requests_num"
REQUESTS_QUEUED = "requests_queued"
REQUESTS_WAIT_MS = "requests_wait_ms"
REQUESTS_ERRORS = "requests_errors"
USAGE_MS = "usage_ms"
RETURNS_BAD = "returns_bad"
CONNECTIONS_NUM = "connections_num"
CONNECTIONS_MS = "connections_ms"
CONNECTIONS_ERRORS = "connections_errors"
CONNECTIONS_LOST = "connections_lost"


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
    why = f"it comes from pool {owner.name!r}" if owner is not None else "it is not lent by any pool (returned already?)"
    return ValueError(f"can't return connection to pool {name!r}, {why}: {conn}")


def closed_error(name: str, pid: int) -> PoolClosed:
    """The :class:`PoolClosed` for a closed pool, or for one used by a child of the process that
    created it (``pid``): a forked child never touches its parent's connections."""
    if pid != os.getpid():
        return PoolClosed(
            f"pool {name!r} was created in process {pid} and cannot serve its child {os.getpid()}:"
            " create pools after fork (hybridpool.get_pool() does)"
        )
    return PoolClosed(f"the pool {name!r} is closed")


class Pool(abc.ABC):
    """A pool of :class:`psycopg.Connection` for code running on threads or greenlets.

    :ivar name: the pool's name (Django: the database alias).
    :ivar min_size: connections kept open.
    :ivar max_size: hard cap of open connections in this process.
    :ivar kwargs: the :func:`psycopg.connect` keyword arguments of its connections (psycopg_pool's).
    """

    name: str
    min_size: int
    max_size: int
    kwargs: dict[str, Any]

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

    @abc.abstractmethod
    def get_stats(self) -> dict[str, int]:
        """Return the pool's gauges and counters under psycopg_pool's stats keys."""

    def __enter__(self) -> Pool:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncPool(abc.ABC):
    """A pool of :class:`psycopg.AsyncConnection` bound to one running event loop.

    The same verbs as :class:`Pool`, awaitable.
    """

    name: str
    min_size: int
    max_size: int

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
