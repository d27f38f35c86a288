"""The psycopg_pool driver: psycopg_pool's own pools with hybridpool's settings, checks and reset.

:class:`ThreadPool` is a :class:`psycopg_pool.ConnectionPool` for code on OS threads: the ORM calls
Django runs in per-request ``sync_to_async`` threads under ASGI, threaded WSGI servers, scripts.
:class:`LoopPool` is a :class:`psycopg_pool.AsyncConnectionPool` for native async code, opened
inside the event loop it serves. psycopg_pool does the pooling (waiting queue, growth, expiry,
reconnection with backoff); this module only maps :class:`~hybridpool.PoolConfig` onto it, plugs in
the shared check and reset (:mod:`hybridpool.session`) and words the errors like every driver.
"""

from __future__ import annotations

import os
import threading
import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from typing import Any

import psycopg
from psycopg.pq import TransactionStatus
from psycopg_pool import AsyncConnectionPool, ConnectionPool, PoolTimeout, TooManyRequests

from .. import pool as base
from .. import session
from ..config import PoolConfig
from ..leases import Leases, maintenance_interval, reclaim


def pool_arguments(config: PoolConfig, kwargs: dict[str, Any] | None, *, asynchronous: bool) -> dict[str, Any]:
    """Map a :class:`PoolConfig` onto psycopg_pool's constructor arguments.

    Idle pooled connections are kept in autocommit (Django sets its own mode on checkout), and
    ``close()`` on a lent connection returns it to the pool (psycopg_pool's ``close_returns``):
    that is what Django's ``connection.close()`` calls.
    """
    if asynchronous:
        check, reset, configure = session.acheck_connection, session.make_areset, session.make_aconfigure
    else:
        check, reset, configure = session.check_connection, session.make_reset, session.make_configure
    return {
        "kwargs": {**(kwargs or {}), "autocommit": True},
        "name": config.name,
        "configure": configure(config.configure),
        "check": None if config.check == "never" else partial(check, policy=config.check),
        "reset": reset(config.reset),
        "reconnect_failed": config.reconnect_failed,
        "num_workers": config.num_workers,
        "close_returns": True,
        "min_size": config.min_size,
        "max_size": config.max_size,
        "timeout": config.timeout,
        "max_waiting": config.max_waiting,
        "max_lifetime": config.max_lifetime,
        "max_idle": config.max_idle,
        "reconnect_timeout": config.reconnect_timeout,
    }


@contextmanager
def _getconn_errors(pool: ThreadPool | LoopPool, timeout: float | None) -> Iterator[None]:
    """Refuse use from a forked child; word psycopg_pool's errors as every driver does."""
    if pool.pid != os.getpid():
        raise base.closed_error(pool.name, pool.pid)
    try:
        yield
    except PoolTimeout:
        wait = pool.timeout if timeout is None else timeout
        raise base.timeout_error(pool.name, pool.get_stats(), wait) from None
    except TooManyRequests:
        raise base.too_many_requests_error(pool.name, pool.get_stats(), pool.max_waiting) from None


#: How long after its thread-local storage is cleared an ending thread stops being alive.
THREAD_EXIT_SECONDS = 0.01


class ThreadPool(ConnectionPool, base.Pool):
    """A :class:`psycopg_pool.ConnectionPool` configured by a :class:`PoolConfig`.

    :param conninfo: libpq connection string.
    :param kwargs: :func:`psycopg.connect` keyword arguments.
    :param config: the pool settings (default: ``PoolConfig()``); its ``name`` names the pool.
    :param open: open now (psycopg_pool's meaning).
    :ivar pid: the process the pool belongs to; a forked child cannot use it.
    """

    def __init__(self, conninfo: str = "", *, kwargs: dict[str, Any] | None = None,
                 config: PoolConfig | None = None, open: bool = False) -> None:
        self.config = config or PoolConfig()
        self.pid = os.getpid()
        self._borrower_ended = threading.Event()
        self.leases = Leases(self.config.leak_timeout, wake=self._borrower_ended.set)
        self._watcher: threading.Thread | None = None
        super().__init__(conninfo, open=open, **pool_arguments(self.config, kwargs, asynchronous=False))

    def open(self, wait: bool = False, timeout: float = 30.0) -> None:
        """Open the pool (psycopg_pool's ``open``) and start watching for stray borrowers."""
        super().open(wait, timeout)
        if self._watcher is None:
            self._watcher = threading.Thread(
                target=_watch, args=(weakref.ref(self), self._borrower_ended, maintenance_interval(self.config)),
                name=f"hybridpool-watch-{self.name}", daemon=True)
            self._watcher.start()

    def getconn(self, timeout: float | None = None) -> psycopg.Connection[Any]:
        """Take a connection; see :meth:`hybridpool.Pool.getconn`."""
        with _getconn_errors(self, timeout):
            conn = super().getconn(timeout)
        self.leases.lend(conn)
        return conn

    def putconn(self, conn: psycopg.Connection[Any]) -> None:
        """Give back a connection; in a forked child, drop the parent's connection untouched."""
        if self.pid == os.getpid():
            self.leases.end(conn)
            if conn.pgconn.transaction_status == TransactionStatus.ACTIVE:
                session.cancel_query(conn)  # psycopg_pool closes it next, without cancelling
            super().putconn(conn)


def _watch(ref: weakref.ref[ThreadPool], borrower_ended: threading.Event, interval: float) -> None:
    """Reclaim the connections of ended borrowers when one ends, and every ``interval`` seconds,
    while the pool is open; holds only a weak reference, so a forgotten pool can be collected."""
    while True:
        if borrower_ended.wait(interval):
            borrower_ended.clear()
            time.sleep(THREAD_EXIT_SECONDS)  # the ending thread is still alive while its locals go
        pool = ref()
        if pool is None or pool.closed or pool.pid != os.getpid():
            return
        reclaim(pool, pool.leases)
        del pool


class LoopPool(AsyncConnectionPool, base.AsyncPool):
    """A :class:`psycopg_pool.AsyncConnectionPool` configured by a :class:`PoolConfig`.

    Create it and ``await`` :meth:`open` inside the event loop it serves; no other loop may use
    it. Arguments as :class:`ThreadPool`.
    """

    def __init__(self, conninfo: str = "", *, kwargs: dict[str, Any] | None = None,
                 config: PoolConfig | None = None) -> None:
        self.config = config or PoolConfig()
        self.pid = os.getpid()
        super().__init__(conninfo, open=False, **pool_arguments(self.config, kwargs, asynchronous=True))

    async def getconn(self, timeout: float | None = None) -> psycopg.AsyncConnection[Any]:
        """Take a connection; see :meth:`hybridpool.AsyncPool.getconn`."""
        with _getconn_errors(self, timeout):
            return await super().getconn(timeout)

    async def putconn(self, conn: psycopg.AsyncConnection[Any]) -> None:
        """Give back a connection; in a forked child, drop the parent's connection untouched."""
        if self.pid == os.getpid():
            await super().putconn(conn)
