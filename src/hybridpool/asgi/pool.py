"""The psycopg_pool driver: psycopg_pool's own pools with hybridpool's settings, checks and reset.

:class:`ThreadPool` is a :class:`psycopg_pool.ConnectionPool` for code on OS threads: the ORM calls
Django runs in per-request ``sync_to_async`` threads under ASGI, threaded WSGI servers, scripts.
:class:`LoopPool` is a :class:`psycopg_pool.AsyncConnectionPool` for native async code, opened
inside the event loop it serves. psycopg_pool does the pooling (waiting queue, growth, expiry,
reconnection with backoff); this module only maps :class:`~hybridpool.PoolConfig` onto it, plugs in
the shared check and reset (:mod:`hybridpool.session`) and words the errors like every driver.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from typing import Any

import psycopg
from psycopg.pq import TransactionStatus
from psycopg_pool import AsyncConnectionPool, ConnectionPool, PoolTimeout, TooManyRequests

from .. import pool as base
from .. import process, session
from ..config import PoolConfig
from ..leases import Leases, maintenance_interval, reclaim

logger = logging.getLogger("hybridpool")


def pool_arguments(config: PoolConfig, kwargs: dict[str, Any] | None, *, asynchronous: bool) -> dict[str, Any]:
    """Map a :class:`PoolConfig` onto psycopg_pool's constructor arguments.

    Idle pooled connections are kept in autocommit (Django sets its own mode on checkout), and
    ``close()`` on a lent connection returns it to the pool (psycopg_pool's ``close_returns``):
    that is what Django's ``connection.close()`` calls.

    :class:`ThreadPool` gets no ``reset`` callback: it resets in :meth:`ThreadPool.putconn`, in the
    returning thread, as the green driver does. Given one, psycopg_pool would hand every return to
    a worker thread, and the next checkout of that connection would wait for the hand-over (about
    100 µs of thread switches on the benchmark machine, more than the reset's round trip).
    """
    configure = session.make_aconfigure if asynchronous else session.make_configure
    return {
        "kwargs": {**(kwargs or {}), "autocommit": True},
        "name": config.name,
        "configure": configure(config.configure),
        "check": session.make_check(config.check, asynchronous=asynchronous),
        "reset": session.make_areset(config.reset) if asynchronous else None,
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


def _refuse_forked(pool: ThreadPool | LoopPool) -> None:
    """Refuse use from a forked child."""
    if pool.pid != process.pid:
        raise base.closed_error(pool.name, pool.pid)


def _worded(pool: ThreadPool | LoopPool, ex: PoolTimeout | TooManyRequests, timeout: float | None) -> Exception:
    """Word psycopg_pool's error ``ex`` as every driver does."""
    if isinstance(ex, TooManyRequests):
        return base.too_many_requests_error(pool.name, pool.get_stats(), pool.max_waiting)
    return base.timeout_error(pool.name, pool.get_stats(), pool.timeout if timeout is None else timeout)


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
        self.pid = process.pid
        self._borrower_ended = threading.Event()
        self.leases = Leases(self.config.leak_timeout, wake=self._borrower_ended.set)
        self._watcher: threading.Thread | None = None
        # Sent, not waited for: the check callback reads the answer at the next checkout.
        self._reset_returned = session.make_reset(self.config.reset, send_only=True)
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
        _refuse_forked(self)
        try:
            conn = super().getconn(timeout)
        except (PoolTimeout, TooManyRequests) as ex:
            raise _worded(self, ex, timeout) from None
        self.leases.lend(conn)
        return conn

    def putconn(self, conn: psycopg.Connection[Any]) -> None:
        """Give back a connection: rolled back and its reset sent here, in the returning thread,
        then to psycopg_pool, which closes it if it is broken, in the middle of a query or past
        ``max_lifetime``; in a forked child, the parent's connection is dropped untouched."""
        if self.pid != process.pid:
            return
        self.leases.end(conn)
        if conn.pgconn.transaction_status == TransactionStatus.ACTIVE:
            session.cancel_query(conn)  # psycopg_pool closes it next, without cancelling
        elif getattr(conn, "_pool", None) is self and not self.closed and session.rollback_or_refuse(conn):
            try:
                self._reset_returned(conn)
            except psycopg.Error as ex:
                logger.warning("error resetting a connection of pool %r, closing it: %s", self.name, ex)
                conn.pgconn.finish()  # psycopg_pool discards a closed connection and opens another
        super().putconn(conn)

    def _reset_connection(self, conn: psycopg.Connection[Any]) -> None:
        """psycopg_pool's step of a return that brings the connection to the idle state: skipped
        while the reset sent by :meth:`putconn` is under way (psycopg_pool would take the busy
        connection for one returned mid-query and close it); the check callback reads its answer
        before the connection is lent again. Overrides a private method of psycopg_pool 3.2-3.3."""
        if not getattr(conn, session.RESET_SENT, False):
            super()._reset_connection(conn)  # type: ignore[misc]

    @staticmethod
    def check_connection(conn: psycopg.Connection[Any]) -> None:
        """psycopg_pool's check of :meth:`check`: an empty query, after reading the answer to a
        sent reset."""
        session.check_connection(conn, "always")


def _watch(ref: weakref.ref[ThreadPool], borrower_ended: threading.Event, interval: float) -> None:
    """Reclaim the connections of ended borrowers when one ends, and every ``interval`` seconds,
    while the pool is open; holds only a weak reference, so a forgotten pool can be collected."""
    while True:
        if borrower_ended.wait(interval):
            borrower_ended.clear()
            time.sleep(THREAD_EXIT_SECONDS)  # the ending thread is still alive while its locals go
        pool = ref()
        if pool is None or pool.closed or pool.pid != process.pid:
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
        self.pid = process.pid
        super().__init__(conninfo, open=False, **pool_arguments(self.config, kwargs, asynchronous=True))

    async def getconn(self, timeout: float | None = None) -> psycopg.AsyncConnection[Any]:
        """Take a connection; see :meth:`hybridpool.AsyncPool.getconn`."""
        _refuse_forked(self)
        try:
            return await super().getconn(timeout)
        except (PoolTimeout, TooManyRequests) as ex:
            raise _worded(self, ex, timeout) from None

    async def putconn(self, conn: psycopg.AsyncConnection[Any]) -> None:
        """Give back a connection; in a forked child, drop the parent's connection untouched."""
        if self.pid == process.pid:
            await super().putconn(conn)
