"""The psycopg_pool driver: psycopg_pool's own pools with hybridpool's settings, checks and reset.

:class:`ThreadPool` is a :class:`psycopg_pool.ConnectionPool` for code on OS threads: the ORM calls
Django runs in per-request ``sync_to_async`` threads under ASGI, threaded WSGI servers, scripts.
:class:`LoopPool` is a :class:`psycopg_pool.AsyncConnectionPool` for native async code, opened
inside the event loop it serves. psycopg_pool does the pooling (waiting queue, growth, expiry,
reconnection with backoff); this module only maps :class:`~hybridpool.PoolConfig` onto it, plugs in
the shared check and reset (:mod:`hybridpool.lifecycle`) and words the errors like every driver.
"""

from __future__ import annotations

import _thread
import asyncio
import logging
import threading
from collections.abc import Callable
from time import monotonic
from typing import TYPE_CHECKING, Any, cast

import psycopg
from psycopg_pool import AsyncConnectionPool, ConnectionPool, PoolTimeout, TooManyRequests
from psycopg_pool.pool_async import StopWorker

from .. import pool as base
from ..pool import ACT, CT
from .. import lifecycle, process, reset, stats, steps
from ..config import PoolConfig
from ..leases import Leases, reclaim
from ..maintenance import MaintenanceTask, maintenance_interval
from ..runtime import gevent_active

if TYPE_CHECKING:
    from contextlib import _AsyncGeneratorContextManager, _GeneratorContextManager

logger = logging.getLogger("hybridpool")


def pool_arguments(config: PoolConfig, kwargs: base.Kwargs, *, asynchronous: bool) -> dict[str, Any]:
    """Map a :class:`PoolConfig` onto psycopg_pool's constructor arguments.

    Idle pooled connections are kept in autocommit (Django sets its own mode on checkout), and
    ``close()`` on a lent connection returns it to the pool (psycopg_pool's ``close_returns``):
    that is what Django's ``connection.close()`` calls.

    No ``check`` callback: :meth:`ThreadPool.getconn` and :meth:`LoopPool.getconn` check what they
    lend themselves, so that a broken connection is replaced at once. psycopg_pool's own check loop
    sleeps 1 s, then 2 s, ... after each broken connection it finds: after a server restart, a
    caller meeting a few dead connections in a row would wait out its timeout.

    No ``reset`` callback either: both pools reset in ``putconn``, in the returning thread or task,
    as the green driver does. Given one, psycopg_pool would hand every return to a worker: the next
    checkout of that connection would wait for the hand-over, and an event loop ending (each
    ``async_to_sync`` call's, ``asyncio.run``'s) would drop the returns still queued, leaving their
    connections open but in no pool.
    """
    return {
        "kwargs": base.autocommit_kwargs(kwargs),
        "name": config.name,
        "configure": steps.bind(lifecycle.configure, asynchronous=asynchronous, function=config.configure),
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


def _worded(pool: ThreadPool[Any] | LoopPool[Any], ex: PoolTimeout | TooManyRequests, timeout: float) -> Exception:
    """Word psycopg_pool's error ``ex`` as every driver does."""
    if isinstance(ex, TooManyRequests):
        return base.too_many_requests_error(pool.name, pool.get_stats(), pool.max_waiting)
    return base.timeout_error(pool.name, pool.get_stats(), timeout)


class ThreadPool(ConnectionPool[CT], base.Pool):
    """A :class:`psycopg_pool.ConnectionPool` configured by a :class:`PoolConfig`.

    :param conninfo: libpq connection string, or a callable returning one per new connection.
    :param kwargs: :func:`psycopg.connect` keyword arguments, or a callable returning them per new
        connection (psycopg_pool's, :data:`hybridpool.pool.Kwargs`).
    :param config: the pool settings (default: ``PoolConfig()``); its ``name`` names the pool.
    :param open: open now (psycopg_pool's meaning).
    :param connection_class: the class of its connections (psycopg_pool's).
    :ivar pid: the process the pool belongs to; a forked child cannot use it.
    """

    def __init__(self, conninfo: base.Conninfo = "", *, kwargs: base.Kwargs = None,
                 config: PoolConfig | None = None, open: bool = False,
                 connection_class: type[CT] = cast("type[CT]", psycopg.Connection)) -> None:
        self.config = config or PoolConfig()
        self.pid = process.pid
        self._maintenance = _Maintenance(self, maintenance_interval(self.config), threading.Event())
        self.leases = Leases(self.config.leak_timeout, wake=self._maintenance.wake)
        self._check_lent = steps.bind(lifecycle.check, at_once=lifecycle.lendable, policy=self.config.check)
        # Sent, not waited for: the check reads the answer at the next checkout.
        self._clean_returned = steps.bind(lifecycle.clean_returned, at_once=lifecycle.returned_at_once,
                                          policy=self.config.reset, send_only=True)
        # Under gevent's patching psycopg_pool's threads are greenlets, and a greenlet killed while
        # it waits in psycopg_pool's queue would leave its place there to take the next connection.
        self._shielded = gevent_active()
        super().__init__(conninfo, open=open, connection_class=connection_class,
                         **pool_arguments(self.config, kwargs, asynchronous=False))
        if open:  # psycopg_pool's constructor opens the pool without calling open()
            self._maintenance.start()

    def open(self, wait: bool = False, timeout: float = 30.0) -> None:
        """Open the pool (psycopg_pool's ``open``) and start watching for stray borrowers."""
        super().open(wait, timeout)
        self._maintenance.start()  # once: a second open() does nothing (_Maintenance.spawn: _thread)

    if TYPE_CHECKING:  # Pool's, lending what getconn() returns: a CT here
        def connection(self, timeout: float | None = None) -> _GeneratorContextManager[CT]: ...
    else:
        connection = base.Pool.connection  # psycopg_pool's would count usage_ms a second time

    def resize(self, min_size: int, max_size: int | None = None) -> None:
        """psycopg_pool's ``resize``, checked as every setting is.

        :raises PoolSettingError: an impossible size (a ``ValueError``, as psycopg_pool's).
        """
        self.config = self.config.resized(min_size, max_size)
        super().resize(*self.config.sizes)

    def getconn(self, timeout: float | None = None) -> CT:
        """Take a connection; see :meth:`hybridpool.Pool.getconn`.

        A broken connection found by the check is closed and the next one tried at once (a new one
        is being opened meanwhile), within the same ``timeout``.
        """
        self.refuse_forked()
        wait = self.timeout if timeout is None else timeout
        deadline = (started := monotonic()) + wait
        while True:
            conn = self._take(deadline - monotonic(), wait)
            # Critical section: taken, not lent; the check may wait on the server.
            try:
                self._check_lent(conn)
            except Exception as ex:  # broken, or a check callable refused it
                logger.info(base.FAILED_CHECK, self.name, ex)
                self._discard(conn)
                stats.retried(self._stats)
                continue
            except BaseException:  # interrupted mid-check: its state is unknown
                self._discard(conn)
                raise
            self.leases.lend(conn)
            if (now := monotonic()) - started >= stats.report_from:  # a long wait, or metrics on
                stats.lent(self, started, now)
            return conn

    def _take(self, timeout: float, wait: float) -> CT:
        """psycopg_pool's ``getconn``, unchecked; under gevent, in a greenlet of its own, which
        gives back what it obtains if the caller is interrupted meanwhile."""
        try:
            if not self._shielded:
                return super().getconn(timeout)
            import gevent
            import gevent.event

            taken = gevent.event.AsyncResult()
            gevent.spawn(_settle, taken, super().getconn, timeout)
            try:
                return cast(CT, taken.get())
            except BaseException:
                def give_back(taken: Any) -> None:
                    if taken.successful():
                        self._putconn(taken.value, from_getconn=True)

                taken.rawlink(give_back)
                raise
        except (PoolTimeout, TooManyRequests) as ex:
            error = _worded(self, ex, wait)  # counting this caller among the waiting, as psycopg_pool does
            stats.refused_checkout(self, monotonic(), wait if isinstance(ex, PoolTimeout) else None)
            if isinstance(ex, PoolTimeout):
                with self._lock:
                    _forget_given_up(self._waiting)
            raise error from None

    def _discard(self, conn: CT) -> None:
        """Close a connection taken and not lent; psycopg_pool frees its slot and opens another."""
        conn.pgconn.finish()
        self._putconn(conn, from_getconn=True)  # counted in connections_lost
        conn._pool = None  # a stale close() cannot return it again

    def putconn(self, conn: psycopg.Connection[Any]) -> None:
        """Give back a connection: rolled back and its reset sent here, in the returning thread,
        then to psycopg_pool, which closes it if it is broken or past ``max_lifetime``; in a
        forked child, the parent's connection is dropped untouched.

        A connection returned in the middle of a query has it cancelled and is closed; a return
        interrupted while it waits on the server closes the connection and frees its slot.

        :raises ValueError: the connection is not lent by this pool (psycopg_pool's check).
        """
        if self.forked:
            return
        self._check_pool_putconn(conn)  # before touching it: it may be another borrower's now
        if (lease := self.leases.end(conn)) is not None:
            stats.used(self._stats, lease.lent_at, monotonic(), self)
        try:
            if not self.closed and not self._clean_returned(conn):
                conn.pgconn.finish()  # psycopg_pool counts it in returns_bad and opens another
        except BaseException:  # interrupted while it waited on the server
            conn.pgconn.finish()
            raise
        finally:
            super().putconn(cast(CT, conn))  # one of this pool's connections: checked above
            if conn.closed:
                conn._pool = None  # psycopg_pool leaves it set on a broken one: refuse a second return

    def _reset_connection(self, conn: CT) -> None:
        """psycopg_pool's step of a return that brings the connection to the idle state: skipped
        while the reset sent by :meth:`putconn` is under way (psycopg_pool would take the busy
        connection for one returned mid-query and close it); the check reads its answer before
        the connection is lent again. Overrides a private method of psycopg_pool 3.2-3.3."""
        if not getattr(conn, reset.RESET_SENT, False):
            super()._reset_connection(conn)

    check_connection = base.Pool.__dict__["check_connection"]  # used by psycopg_pool's check() too

    def _connect(self, timeout: float | None = None) -> CT:
        """psycopg_pool's, timed for the observers (psycopg_pool 3.2-3.3's private method)."""
        started = monotonic()
        conn = super()._connect(timeout)
        stats.created(self, started, monotonic())
        return conn


def _forget_given_up(waiting: Any) -> None:
    """Remove from psycopg_pool's queue (``_waiting``, under its lock) the callers that stopped
    waiting: psycopg_pool leaves one that timed out there until a connection is returned, counted
    in ``requests_waiting`` and by ``max_waiting``, which would refuse the next caller for it
    (psycopg_pool 3.2-3.3's private ``WaitingClient.error``; the green pool removes it at once)."""
    for client in [client for client in waiting if client.error is not None]:
        waiting.remove(client)


def _settle(result: Any, function: Any, *args: Any) -> None:
    """Set ``result`` (a ``gevent.event.AsyncResult``) to what ``function(*args)`` returns or raises."""
    try:
        result.set(function(*args))
    except BaseException as ex:  # noqa: BLE001 - handed to whoever waits on the result
        result.set_exception(ex)


class _Maintenance(MaintenanceTask["ThreadPool[Any]"]):
    """The thread pool's maintenance (:mod:`hybridpool.maintenance`): a thread, woken by a
    ``threading.Event``; a pass reclaims the connections of ended borrowers (psycopg_pool's own
    scheduler does the rest: expiry, ``max_idle``, refill)."""

    def spawn(self, run: Callable[[], None]) -> None:
        """Start ``run`` with ``_thread``, which returns at once: ``threading.Thread.start()``
        waits for the thread to run, and under gevent that wait yields, letting psycopg_pool's
        workers run inside the constructor (a pool its creator drops then is finalized by the
        worker that held it last, which cannot join itself)."""
        _thread.start_new_thread(run, ())

    def maintain(self, pool: ThreadPool[Any]) -> None:
        reclaim(pool, pool.leases)


class LoopPool(AsyncConnectionPool[ACT], base.AsyncPool):
    """A :class:`psycopg_pool.AsyncConnectionPool` configured by a :class:`PoolConfig`.

    Create it and ``await`` :meth:`open` inside the event loop it serves; no other loop may use
    it. Arguments as :class:`ThreadPool`.
    """

    def __init__(self, conninfo: base.Conninfo = "", *, kwargs: base.Kwargs = None,
                 config: PoolConfig | None = None,
                 connection_class: type[ACT] = cast("type[ACT]", psycopg.AsyncConnection)) -> None:
        self.config = config or PoolConfig()
        self.pid = process.pid
        self._check_lent = steps.bind(lifecycle.check, asynchronous=True, at_once=lifecycle.lendable,
                                      policy=self.config.check)
        self._clean_returned = steps.bind(lifecycle.clean_returned, asynchronous=True,
                                          at_once=lifecycle.returned_at_once, policy=self.config.reset)
        super().__init__(conninfo, open=False, connection_class=connection_class,
                         **pool_arguments(self.config, kwargs, asynchronous=True))

    if TYPE_CHECKING:  # AsyncPool's, lending what getconn() returns: an ACT here
        def connection(self, timeout: float | None = None) -> _AsyncGeneratorContextManager[ACT]: ...
    else:
        connection = base.AsyncPool.connection  # psycopg_pool's would count usage_ms a second time

    async def open(self, wait: bool = False, timeout: float = 30.0) -> None:
        """Open the pool in the running loop, which it serves (psycopg_pool's ``open``)."""
        self._loop = asyncio.get_running_loop()
        self._closing: set[asyncio.Task[None]] = set()
        budget = getattr(self.connection_class, "budget", None)
        if budget is not None:
            budget.hold(self)
        await super().open(wait, timeout)

    def shed_soon(self) -> None:
        """Ask the pool, from any thread, to close one idle connection (its loop does it): a
        caller in another loop waits for a unit of the budget they share."""
        loop = getattr(self, "_loop", None)
        if loop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(self._shed_one)
            except RuntimeError:  # closed meanwhile
                pass

    def _shed_one(self) -> None:
        """Close the longest idle connection, if any (psycopg_pool's private state, 3.2-3.3)."""
        if self._closed or not self._pool:
            return
        conn = self._pool.popleft()
        self._nconns -= 1
        self._nconns_min = min(self._nconns_min, len(self._pool))
        self._closing.add(task := self._loop.create_task(conn.close()))
        task.add_done_callback(self._closing.discard)

    async def getconn(self, timeout: float | None = None, *, carry: bool = False) -> ACT:
        """Take a connection; see :meth:`hybridpool.AsyncPool.getconn` and :meth:`ThreadPool.getconn`.

        :param carry: the caller's first statement carries a pending safe reset
            (:class:`hybridpool.cursors.AsyncResettingCursor`, ``NativeQuerySet``'s reads); for any
            other caller it is run before the connection is lent.
        """
        self.refuse_forked()
        wait = self.timeout if timeout is None else timeout
        deadline = (started := monotonic()) + wait
        while True:
            try:
                conn = await super().getconn(deadline - monotonic())
            except (PoolTimeout, TooManyRequests) as ex:
                error = _worded(self, ex, wait)
                stats.refused_checkout(self, monotonic(), wait if isinstance(ex, PoolTimeout) else None)
                if isinstance(ex, PoolTimeout):
                    async with self._lock:
                        _forget_given_up(self._waiting)
                raise error from None
            try:
                await self._check_lent(conn)
                if not carry:
                    await steps.arun(reset.flush(conn), conn)
            except Exception as ex:
                logger.info(base.FAILED_CHECK, self.name, ex)
                await self._discard(conn)
                stats.retried(self._stats)
                continue
            except BaseException:  # cancelled mid-check
                await self._discard(conn)
                raise
            setattr(conn, stats.LENT_AT, now := monotonic())
            if now - started >= stats.report_from:  # a long wait, or metrics on
                stats.lent(self, started, now)
            return conn

    async def _connect(self, timeout: float | None = None) -> ACT:
        """psycopg_pool's, timed for the observers (psycopg_pool 3.2-3.3's private method)."""
        started = monotonic()
        conn = await super()._connect(timeout)
        stats.created(self, started, monotonic())
        return conn

    async def _discard(self, conn: ACT) -> None:
        """Close a connection taken and not lent; psycopg_pool frees its slot and opens another."""
        _close_at_once(conn)
        await self._putconn(conn, from_getconn=True)  # counted in connections_lost
        conn._pool = None

    def close_now(self) -> None:
        """Close the pool and its idle connections at once, without awaiting, for a pool whose
        event loop is ending or ended: psycopg_pool's ``close()`` awaits its worker tasks, which
        the ending loop has cancelled, and raises before it closes any connection; and a worker
        cancelled in the middle of a task takes the cancellation for the task's failure and waits
        for the next one, which would keep the loop from ending: it is sent a stop. Lent
        connections are closed when returned. Uses psycopg_pool's private state (3.2-3.3)."""
        self._closed = True
        try:
            for _ in self._workers:
                self.run_task(StopWorker(self))
        except RuntimeError:  # the loop is closed: its workers never run again
            pass
        while self._pool:
            _close_at_once(self._pool.popleft())

    async def putconn(self, conn: psycopg.AsyncConnection[Any]) -> None:
        """Give back a connection, as :meth:`ThreadPool.putconn` does, in the returning task; its
        reset is run, not only sent. A return cancelled while it waits on the server closes the
        connection and frees its slot.

        :raises ValueError: the connection is not lent by this pool (psycopg_pool's check).
        """
        if self.forked:
            return
        self._check_pool_putconn(conn)
        if (lent_at := getattr(conn, stats.LENT_AT, None)) is not None:  # stamped by getconn
            stats.used(self._stats, lent_at, monotonic(), self)
        try:
            if not self.closed and not await self._clean_returned(conn):
                _close_at_once(conn)  # psycopg_pool counts it in returns_bad and opens another
        except BaseException:  # cancelled while it waited on the server
            _close_at_once(conn)
            raise
        finally:
            await super().putconn(cast(ACT, conn))  # no reset callback: back in the pool before this returns
            conn._pool = None  # left set on a broken one: refuse a second return


def _close_at_once(conn: psycopg.AsyncConnection[Any]) -> None:
    """Close ``conn`` without awaiting, whatever its pool (a lent connection's ``close()`` would
    return it): its share of the budget too, if it has one (:mod:`hybridpool.asgi.budget`)."""
    close_now = getattr(conn, "close_now", None)
    if close_now is not None:
        close_now()
    else:
        conn.pgconn.finish()
