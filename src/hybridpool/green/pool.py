"""The green driver: a pool for gevent, built on gevent's primitives and no threads.

Every decision (slots, idle stack, first-come-first-served waiters, idle expiry, backoff) is taken
by :class:`hybridpool.capacity.Capacity`; this module does the I/O it asks for. The hub runs one
greenlet at a time, so a Capacity call is atomic without a lock as long as nothing in between
yields. Waiters are :class:`gevent.event.AsyncResult` objects: a returned connection is handed to
the oldest one directly, so a greenlet arriving later cannot take it first (``gevent.queue``'s
``get()`` serves a newcomer before the greenlets already blocked in it, which is why the waiters
are not a gevent queue). New connections are opened by their own greenlets, one growth step at a
time, so the callers that wait are never blocked by a connect (psycopg is cooperative once gevent
has patched ``select``).
"""

from __future__ import annotations

import itertools
import logging
import weakref
from collections import defaultdict
from collections.abc import Callable
from time import monotonic
from typing import Any, Generic, cast

import gevent
import gevent.event
import gevent.local
import psycopg

from .. import pool as base
from ..pool import CT
from .. import lifecycle, process, reset, stats, steps
from ..capacity import Backoff, Capacity, expiry
from ..config import PoolConfig
from ..leases import Leases, reclaim
from ..maintenance import MaintenanceTask, maintenance_interval
from ..runtime import gevent_blocking

logger = logging.getLogger("hybridpool")

_names = itertools.count(1)

class GreenPool(base.Pool, Generic[CT]):
    """A pool of :class:`psycopg.Connection` for greenlets.

    :param conninfo: libpq connection string, or a callable returning one per new connection.
    :param kwargs: :func:`psycopg.connect` keyword arguments (``autocommit`` is forced on), or a
        callable returning them per new connection (psycopg_pool's, :data:`hybridpool.pool.Kwargs`).
    :param config: the pool settings (default: ``PoolConfig()``); its ``name`` names the pool.
    :param open: open now.
    :param connection_class: the class of its connections (psycopg_pool's ``connection_class``).
    :ivar pid: the process the pool belongs to; a forked child cannot use it.
    """

    #: Like psycopg_pool's ``close_returns``: ``conn.close()`` on a lent connection returns it.
    close_returns = True

    min_size: int  # writable here: resize() sets them
    max_size: int
    kwargs: dict[str, Any] | Callable[[], Any]  # never None: autocommit is forced on

    def __init__(self, conninfo: base.Conninfo = "", *, kwargs: base.Kwargs = None,
                 config: PoolConfig | None = None, open: bool = False,
                 connection_class: type[CT] = cast("type[CT]", psycopg.Connection)) -> None:
        self.config = config = config or PoolConfig()
        self.conninfo = conninfo
        self.connection_class = connection_class
        self.kwargs = base.autocommit_kwargs(kwargs)
        self.name = config.name or f"pool-{next(_names)}"
        self.min_size, self.max_size = config.sizes
        # psycopg_pool's attributes, read-only here as there (resize() changes the sizes)
        self.timeout = config.timeout
        self.max_waiting = config.max_waiting
        self.max_lifetime = config.max_lifetime
        self.max_idle = config.max_idle
        self.reconnect_timeout = config.reconnect_timeout
        self.num_workers = config.num_workers  # unused: connections are opened by greenlets of their own
        self.pid = process.pid
        self._cap: Capacity[CT, gevent.event.AsyncResult] = Capacity(
            self.min_size, self.max_size, config.max_waiting
        )
        self._check = steps.bind(lifecycle.check, at_once=lifecycle.lendable, policy=config.check)
        # A safe reset is sent on return, and its answer read by the check at the next checkout.
        self._clean_returned = steps.bind(lifecycle.clean_returned, at_once=lifecycle.returned_at_once,
                                          policy=config.reset, send_only=True)
        # Only the safe reset is sent on return; a connection just returned is then passed over
        # for one whose reset has been answered, so that the borrower does not wait for it.
        self._settled = reset.settled if config.reset == "safe" else None
        self._configure = steps.bind(lifecycle.configure, function=config.configure)
        self._stats: defaultdict[str, int] = defaultdict(int)  # counters; a Counter costs twice as much to add to
        self._maintenance = _Maintenance(self, maintenance_interval(config), gevent.event.Event())
        self.leases = Leases(config.leak_timeout, borrower=_current_greenlet, wake=self._maintenance.wake,
                             local=gevent.local.local)
        self._filled = gevent.event.Event()  # set while min_size connections are established: Capacity.filled
        self._closed = True
        self._was_opened = False  # a pool is opened once (psycopg_pool's rule)
        if reason := gevent_blocking(forced=True):
            logger.warning("pool %r: %s", self.name, reason)
        if open:
            self.open()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<{type(self).__name__} {self.name!r} {state}, {self._cap.nconns}/{self.max_size} connections>"

    # -- lifecycle

    def open(self, wait: bool = False, timeout: float = 30.0) -> None:
        """Open the pool: start filling it to ``min_size`` and the maintenance greenlet; a no-op on
        an open pool.

        :raises PoolTimeout: ``wait`` and ``min_size`` connections not ready within ``timeout``
            (the pool is then closed, see :meth:`wait`).
        :raises PoolClosed: the pool was closed: a pool is opened once, as psycopg_pool's.
        """
        if self._closed and self._was_opened:
            raise base.reopen_error(self.name)
        if self._closed:
            self._closed = False
            self._was_opened = True
            self._maintenance.start()
            self._grow()
            logger.info("pool %r opened: min_size=%s, max_size=%s", self.name, self.min_size, self.max_size)
        if wait:
            self.wait(timeout)

    def wait(self, timeout: float = 30.0) -> None:
        """Wait until ``min_size`` connections are established.

        :raises PoolTimeout: not ready within ``timeout`` seconds; the pool is then closed, as
            psycopg_pool's ``wait()`` does (a program that waits wants to stop if the database is
            not there).
        :raises PoolClosed: the pool is not open.
        """
        if self._closed:
            raise base.closed_error(self.name, self.pid, opened=self._was_opened)
        if self.min_size and not self._filled.wait(timeout):
            self.close()
            raise base.not_ready_error(self.name, timeout)

    def close(self, timeout: float = 5.0) -> None:
        """Close the pool: waiters get :class:`PoolClosed`, idle connections are closed now and
        lent ones when they are returned. Nothing is waited for (``timeout`` is unused): the
        maintenance greenlet, woken, ends at its next turn, or once no borrower holds a connection
        (:mod:`hybridpool.maintenance`)."""
        if self._closed or self.forked:
            return  # a forked child leaves its parent's connections alone
        self._closed = True
        while self._cap.waiting:
            self._cap.waiting.popleft().set_exception(base.closed_error(self.name, self.pid))
        for conn in self._cap.remove_idle(lambda conn: True):
            self._close_connection(conn)
        self._maintenance.wake()  # to end, or to take back, and close, what borrowers still hold
        logger.info("pool %r closed", self.name)

    @property
    def closed(self) -> bool:
        """True if the pool is not open."""
        return self._closed

    # -- lending

    def getconn(self, timeout: float | None = None) -> CT:
        """Take a connection; see :meth:`hybridpool.Pool.getconn`."""
        stats.requested(self._stats)
        if self._closed or self.forked:
            raise base.closed_error(self.name, self.pid, opened=self._was_opened)
        wait = self.timeout if timeout is None else timeout
        deadline = (started := monotonic()) + wait
        while True:
            conn = self._cap.take(self._settled) or self._wait_for_connection(deadline, wait)
            # Critical section: the connection is neither idle nor lent until it is lent below or
            # closed; the check may wait on the server, and so be interrupted.
            try:
                self._check(conn)
            except Exception as ex:  # broken, or a check callable refused it: open another one
                logger.info(base.FAILED_CHECK, self.name, ex)
                stats.lost(self._stats)
                self._replace(conn)
                continue
            except BaseException:  # interrupted mid-check: its state is unknown
                self._replace(conn)
                raise
            # Lent: psycopg's close() returns it here (calling only putconn(), duck-typed).
            conn._pool = self  # type: ignore[assignment]  # psycopg types _pool as psycopg_pool's BasePool
            self.leases.lend(conn)
            if (now := monotonic()) - started >= stats.report_from:  # a long wait, or metrics on
                stats.lent(self, started, now)
            return conn

    def _wait_for_connection(self, deadline: float, wait: float) -> CT:
        waiter = gevent.event.AsyncResult()
        if not self._cap.enqueue(waiter):
            stats.refused(self._stats)
            stats.refused_checkout(self, monotonic(), None)
            raise base.too_many_requests_error(self.name, self.get_stats(), self._cap.max_waiting)
        stats.queued(self._stats)
        self._grow()
        started = monotonic()
        timer = gevent.Timeout(max(deadline - started, 0.0))
        timer.start()
        try:
            return cast(CT, waiter.get())
        except gevent.Timeout as ex:
            if ex is not timer:
                self._give_back(waiter)
                raise
            now = self.get_stats()  # counting this caller among the waiting, as psycopg_pool does
            if not self._cap.cancel(waiter):
                return cast(CT, waiter.get_nowait())  # served just as the timer fired
            stats.refused(self._stats)
            stats.refused_checkout(self, monotonic(), wait)
            raise base.timeout_error(self.name, now, wait) from None
        except BaseException:  # killed, or the pool closed: leave the queue, return what was served
            self._give_back(waiter)
            raise
        finally:
            timer.close()
            stats.waited(self._stats, started, monotonic())

    def _give_back(self, waiter: gevent.event.AsyncResult) -> None:
        """A waiter gave up: leave the queue, or hand on the connection it was served (never lent,
        it is as clean as when it was handed over)."""
        if not self._cap.cancel(waiter) and waiter.successful():
            self._hand_over(waiter.value)

    def putconn(self, conn: psycopg.Connection[Any]) -> None:
        """Give back a connection: rolled back and reset, or closed if it is broken, in the
        middle of a query or past ``max_lifetime``; in a forked child, dropped untouched.

        A return interrupted while it waits on the server (``gevent.Timeout``, ``GreenletExit``)
        closes the connection, whose state is then unknown, and frees its slot.

        :raises ValueError: the connection is not lent by this pool: another pool's, or returned
            already (psycopg_pool's check and message).
        """
        if self.forked:
            return
        if getattr(conn, "_pool", None) is not self:
            raise base.not_lent_error(self.name, conn)
        conn = cast(CT, conn)  # lent by this pool
        # From here on the connection is not lent: a second return, or its close(), is refused.
        conn._pool = None
        now = monotonic()
        if (lease := self.leases.end(conn)) is not None:
            stats.used(self._stats, lease.lent_at, now, self)
        if self._closed or now >= conn._expire_at:  # resize() and drain() expire lent connections too
            if not self._closed:
                logger.info("closing expired connection of pool %r", self.name)
            self._replace(conn)
            return
        try:
            clean = self._clean_returned(conn)
        except BaseException:  # interrupted while it waited on the server: its state is unknown
            stats.returned_bad(self._stats)
            self._replace(conn)
            raise
        if clean:
            self._hand_over(conn)
        else:
            stats.returned_bad(self._stats)
            self._replace(conn)
            logger.warning(base.DISCARDED_RETURN, self.name, conn)

    def _hand_over(self, conn: CT) -> None:
        """Give a clean connection to the oldest waiter, or to the idle stack."""
        if self._closed:
            self._close_connection(conn)
        elif (waiter := self._cap.put(conn)) is not None:
            waiter.set(conn)

    # -- connections

    def _connect(self) -> CT:
        started = monotonic()
        stats.connecting(self._stats)
        try:
            with gevent.Timeout(self.timeout, psycopg.OperationalError(f"connecting took more than {self.timeout} s")):
                conninfo = self.conninfo() if callable(self.conninfo) else self.conninfo
                kwargs = self.kwargs() if callable(self.kwargs) else self.kwargs
                conn = self.connection_class.connect(conninfo, **kwargs)
        except BaseException:
            stats.connect_failed(self._stats)
            raise
        now = monotonic()
        stats.connected(self._stats, started, now)
        conn._pool = None  # psycopg's mark of a pooled connection (no ResourceWarning); set while lent
        conn._created_at = now
        conn._expire_at = expiry(now, self.config.max_lifetime)
        try:
            self._configure(conn)
        except BaseException:
            stats.connect_failed(self._stats)
            conn.close()
            raise
        stats.created(self, started, monotonic())
        return conn

    def _add_connection(self, growing: bool = False, backoff: Backoff | None = None) -> None:
        """Open one connection into a reserved slot; on failure retry with backoff, then give up."""
        try:
            conn = self._connect()
        except Exception as ex:
            if self._closed:
                self._cap.connect_failed(growing)
                return
            logger.warning(base.CONNECT_FAILED, self.name, ex)
            backoff = backoff or Backoff(self.config.reconnect_timeout)
            delay = backoff.failed(monotonic())
            if delay is None:
                logger.warning(base.RECONNECT_GAVE_UP, self.name, self.reconnect_timeout)
                self._cap.connect_failed(growing)
                self._cap.stop_filling()
                if self.config.reconnect_failed is not None:
                    self.config.reconnect_failed(self)
            else:
                gevent.spawn_later(delay, self._add_connection, growing, backoff)
            return
        except BaseException:  # killed (the hub is ending): the slot is free again
            self._cap.connect_failed(growing)
            raise
        self._cap.connected()
        self._note_filled()
        self._hand_over(conn)
        if growing and self._cap.growth_ended():
            gevent.spawn(self._add_connection, True)

    def _note_filled(self) -> None:
        """Set :attr:`_filled` while ``min_size`` connections are established, for :meth:`wait`."""
        if self._cap.filled:
            self._filled.set()
        else:
            self._filled.clear()

    def _grow(self) -> None:
        """Open what ``min_size`` and the waiting callers need, each connect in its own greenlet."""
        if self._closed:
            return
        for _ in range(self._cap.fill()):
            gevent.spawn(self._add_connection)
        if self._cap.grow():
            gevent.spawn(self._add_connection, True)

    def _close_connection(self, conn: CT, *, release: bool = True) -> None:
        """Close ``conn`` (libpq sends the terminate message; nothing here waits, so nothing can
        interrupt it) and free its slot unless the caller freed it already."""
        conn._pool = None
        try:
            conn.close()
        finally:
            self._cap.closed(release=release)
            self._note_filled()

    def _replace(self, conn: CT) -> None:
        self._close_connection(conn)
        self._grow()

    # -- sizes

    def resize(self, min_size: int, max_size: int | None = None) -> None:
        """Change ``min_size`` and ``max_size`` (default: ``min_size``), as psycopg_pool's
        ``resize``: a larger ``min_size`` opens connections now; a smaller one lets the surplus
        go once idle for ``max_idle``, and a smaller ``max_size`` closes lent connections above
        it as they are returned.

        :raises PoolSettingError: an impossible size (a ``ValueError``, as psycopg_pool's).
        """
        self.config = config = self.config.resized(min_size, max_size)
        logger.info("resizing pool %r to min_size=%s max_size=%s", self.name, config.min_size, config.max_size)
        self.min_size, self.max_size = config.sizes
        for conn in self._cap.resize(self.min_size, self.max_size):
            self._close_connection(conn)
        for conn in self.leases.lent()[:max(self._cap.nconns - self.max_size, 0)]:
            conn._expire_at = 0.0  # above max_size: closed when returned
        self._note_filled()
        self._grow()

    def drain(self) -> None:
        """Close every idle connection and open new ones; lent connections are closed when
        returned (psycopg_pool's ``drain``: e.g. after adapters or server settings changed)."""
        for conn in self.leases.lent():
            conn._expire_at = 0.0  # closed when returned
        for conn in self._cap.remove_idle(lambda conn: True):
            self._close_connection(conn)
        self._grow()

    # -- maintenance

    def _maintain(self) -> None:
        """Take back what ended borrowers left; close expired idle connections, and once per
        ``max_idle`` one connection above ``min_size`` that stayed idle all along (psycopg_pool's
        rule, :meth:`Capacity.shrink`)."""
        reclaim(self, self.leases)
        now = monotonic()
        if (conn := self._cap.shrink_due(now, self.max_idle)) is not None:
            logger.info("shrinking pool %r to %s: connections unused for %s s", self.name, self._cap.nconns,
                        self.max_idle)
            self._close_connection(conn, release=False)
        for conn in self._cap.remove_idle(lambda conn: now >= conn._expire_at):
            self._close_connection(conn)
        self._grow()

    def check(self) -> None:
        """Check every idle connection with an empty query; close and replace the broken ones, and
        refill to ``min_size``, also after reconnecting gave up (psycopg_pool's ``check``).

        Interrupted, it closes the connection being checked and puts back those not checked yet.
        """
        unchecked = self._cap.remove_idle(lambda conn: True)
        try:
            while unchecked:
                conn = unchecked.pop()
                try:
                    self.check_connection(conn)
                except Exception as ex:
                    logger.warning(base.BROKEN_IDLE, self.name, ex)
                    stats.lost(self._stats)
                    self._close_connection(conn)
                except BaseException:
                    self._close_connection(conn)
                    raise
                else:
                    self._hand_over(conn)
        finally:
            for conn in unchecked:
                self._hand_over(conn)
            self._cap.resume_filling()  # refill, even after reconnecting gave up
            self._grow()

    # -- stats

    @property
    def _pool(self) -> tuple[CT, ...]:
        """The idle connections, under psycopg_pool's (private) name, for code written to read it."""
        return tuple(self._cap.idle)

    @property
    def _nconns(self) -> int:
        """The connections open or being opened, under psycopg_pool's (private) name."""
        return self._cap.nconns

    def get_stats(self) -> dict[str, int]:
        """Return the pool's gauges and counters under psycopg_pool's stats keys."""
        return {**stats.gauges(self.min_size, self.max_size, self._cap.nconns, len(self._cap.idle),
                               len(self._cap.waiting)), **self._stats}

    def pop_stats(self) -> dict[str, int]:
        """Return the stats and reset the counters (psycopg_pool's ``pop_stats``)."""
        stats = self.get_stats()
        self._stats.clear()
        return stats


def _current_greenlet() -> weakref.ref[Any]:
    return weakref.ref(gevent.getcurrent())


class _Maintenance(MaintenanceTask["GreenPool[Any]"]):
    """The green pool's maintenance (:mod:`hybridpool.maintenance`): a greenlet, woken by a gevent
    event; a pass is :meth:`GreenPool._maintain`."""

    def spawn(self, run: Callable[[], None]) -> None:
        gevent.spawn(run)

    def maintain(self, pool: GreenPool[Any]) -> None:
        pool._maintain()
