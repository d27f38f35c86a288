"""What every driver does to one connection on checkout and return: liveness check and reset.

These functions touch only the connection they are given; every driver calls them itself, in its
own ``getconn`` and ``putconn`` (the psycopg_pool driver gives psycopg_pool no ``check`` or
``reset`` callback: see :func:`hybridpool.asgi.pool.pool_arguments`), so all apply the same
policy (docs/design.md invariants 3 and 4).
"""

from __future__ import annotations

import inspect
import logging
import select
from collections.abc import Callable
from functools import partial
from operator import attrgetter
from time import monotonic
from typing import Any, cast

import psycopg
from psycopg import sql
from psycopg.pq import ExecStatus, TransactionStatus

from .readiness import readable_now

logger = logging.getLogger("hybridpool")

#: A connection used more recently than this (seconds) goes out without a round trip.
RECENT = 1.0

#: The attribute holding a pooled connection's last return (monotonic seconds).
USED_AT = "_hybridpool_used_at"


def mark_used(conn: psycopg.BaseConnection[Any]) -> None:
    """Stamp ``conn`` as used now."""
    setattr(conn, USED_AT, monotonic())


def used_at(conn: psycopg.BaseConnection[Any]) -> float:
    """Return when ``conn`` was last returned (monotonic seconds; 0 if never)."""
    return getattr(conn, USED_AT, 0.0)


def _socket_quiet(conn: psycopg.BaseConnection[Any]) -> bool:
    """True if nothing waits to be read on an idle connection's socket.

    An idle connection receives nothing unless the server ends it (``pg_terminate_backend``,
    restart: an error message and EOF) or a ``NOTIFY`` arrives; a zero-timeout poll of the socket
    tells without a round trip: one system call.
    """
    try:
        return not readable_now(conn.pgconn.socket)
    except (OSError, ValueError, psycopg.OperationalError):
        return False


def needs_check(conn: psycopg.BaseConnection[Any], policy: str = "auto") -> bool:
    """Decide whether lending ``conn`` needs a liveness round trip, per the ``check`` setting.

    ``"auto"``: not for a connection used within :data:`RECENT` seconds whose socket is quiet.
    ``"always"``: yes. ``"never"``: no.

    :raises psycopg.OperationalError: if the connection is known to be closed, whatever the
        policy: an idle connection that a former borrower closed behind the pool's back.
    """
    if conn.closed:
        raise psycopg.OperationalError("the connection is closed")
    if policy == "never":
        return False
    return not (policy == "auto" and monotonic() - getattr(conn, USED_AT, 0.0) < RECENT and _socket_quiet(conn))


def check_connection(conn: psycopg.Connection[Any], policy: str | Callable[..., Any] = "auto") -> None:
    """Check that ``conn`` works before it is lent; the contract of psycopg_pool's ``check``.

    ``policy`` is the ``check`` setting: one of :func:`needs_check`'s, or a callable doing the check.

    A reset sent on return (:func:`send_reset`) is read first, whatever the policy.

    :raises psycopg.OperationalError: if the connection is broken.
    """
    finish_reset(conn)
    if callable(policy):
        policy(conn)
    elif needs_check(conn, policy):
        conn.execute("")  # every idle pooled connection is in autocommit: no BEGIN


def make_check(policy: str | Callable[..., Any], *, asynchronous: bool = False) -> Callable[..., Any]:
    """Return what checks a connection before it is lent, per the ``check`` setting:
    :func:`check_connection` (:func:`acheck_connection`) bound to ``policy``."""
    return partial(acheck_connection if asynchronous else check_connection, policy=policy)


async def acheck_connection(conn: psycopg.AsyncConnection[Any], policy: str | Callable[..., Any] = "auto") -> None:
    """The async twin of :func:`check_connection`; a callable ``policy`` may be a coroutine function."""
    if callable(policy):
        if inspect.isawaitable(result := policy(conn)):
            await result
    elif needs_check(conn, policy):
        await conn.execute("")


def make_configure(configure: Callable[..., Any] | None) -> Callable[[psycopg.Connection[Any]], None]:
    """Return what runs on each new connection: stamp it as used, then the ``configure`` setting.

    :raises psycopg.ProgrammingError: ``configure`` left the connection in a transaction.
    """

    def configure_connection(conn: psycopg.Connection[Any]) -> None:
        mark_used(conn)
        if configure is not None:
            configure(conn)
            _check_idle(conn, configure)

    return configure_connection


def make_aconfigure(configure: Callable[..., Any] | None) -> Callable[[psycopg.AsyncConnection[Any]], Any]:
    """The async twin of :func:`make_configure`; ``configure`` may be a coroutine function."""

    async def configure_connection(conn: psycopg.AsyncConnection[Any]) -> None:
        mark_used(conn)
        if configure is not None:
            if inspect.isawaitable(result := configure(conn)):
                await result
            _check_idle(conn, configure)

    return configure_connection


#: What a returned connection needs, by its transaction status (:func:`on_return`).
REUSE, ROLLBACK, CANCEL, CLOSE = "reuse", "rollback", "cancel", "close"


def on_return(status: int) -> str:
    """Decide what a returned connection needs before it can be reset and reused, from its
    ``pgconn.transaction_status``: :data:`REUSE` (idle), :data:`ROLLBACK` (an open or failed
    transaction), :data:`CANCEL` then close (in the middle of a query), :data:`CLOSE` (broken).
    psycopg_pool decides the same in ``_reset_connection``."""
    if status == TransactionStatus.IDLE:
        return REUSE
    if status in (TransactionStatus.INTRANS, TransactionStatus.INERROR):
        return ROLLBACK
    return CANCEL if status == TransactionStatus.ACTIVE else CLOSE


def clean_returned(conn: psycopg.Connection[Any], reset: Callable[[psycopg.Connection[Any]], None]) -> bool:
    """Bring a returned connection back to the idle state (:func:`on_return`) and reset it
    (:func:`make_reset`'s ``reset``); False if it must be closed instead: broken, in the middle of
    a query (cancelled first), or its rollback or reset failed.

    Any other exception, an interruption above all (``gevent.Timeout``, ``GreenletExit``,
    ``KeyboardInterrupt``), leaves the connection in an unknown state: the caller closes it.
    """
    action = on_return(conn.pgconn.transaction_status)
    if action == CANCEL:
        logger.warning("connection returned in the middle of a query, closing it: %s", conn)
        cancel_query(conn)
    if action in (CANCEL, CLOSE):
        return False
    try:
        if action == ROLLBACK:
            conn.rollback()
        reset(conn)
    except psycopg.Error as ex:
        logger.warning("error cleaning a returned connection, closing it: %s", ex)
        return False
    return True


async def aclean_returned(conn: psycopg.AsyncConnection[Any],
                          reset: Callable[[psycopg.AsyncConnection[Any]], Any]) -> bool:
    """The async twin of :func:`clean_returned` (``reset``: :func:`make_areset`'s)."""
    action = on_return(conn.pgconn.transaction_status)
    if action == CANCEL:
        logger.warning("connection returned in the middle of a query, closing it: %s", conn)
        try:
            await conn.cancel_safe(timeout=CANCEL_TIMEOUT)
        except (psycopg.Error, OSError) as ex:
            logger.warning("cancelling the query of a returned connection failed: %s", ex)
    if action in (CANCEL, CLOSE):
        return False
    try:
        if action == ROLLBACK:
            await conn.rollback()
        await reset(conn)
    except psycopg.Error as ex:
        logger.warning("error cleaning a returned connection, closing it: %s", ex)
        return False
    return True


#: Longest wait for the server to accept the cancellation of an abandoned query (s).
CANCEL_TIMEOUT = 5.0


def cancel_query(conn: psycopg.Connection[Any]) -> None:
    """Ask the server to stop the query a returned connection is in the middle of.

    Closing the connection alone would leave the server running the query until it next writes
    to the socket (a ``pg_sleep`` to its end, a large result to the first full buffer). psycopg's
    ``cancel_safe`` waits cooperatively (under gevent too); failure to cancel is logged only,
    since the connection is closed next anyway.
    """
    try:
        conn.cancel_safe(timeout=CANCEL_TIMEOUT)
    except (psycopg.Error, OSError) as ex:
        logger.warning("cancelling the query of a returned connection failed: %s", ex)


#: The attributes psycopg keeps client side, and their value in an idle pooled connection.
CLIENT_DEFAULTS = (("autocommit", True), ("isolation_level", None), ("read_only", None), ("deferrable", None))

#: What ``reset="safe"`` runs, in one round trip, on a connection where psycopg has prepared no
#: statement (the common case under Django, whose default client-side binding prepares none): role,
#: every GUC, ``WITH HOLD`` cursors, ``LISTEN``, temp tables, sequence state, advisory locks and
#: prepared statements go back to a new session's. The cheapest of the resets: about one empty
#: round trip of server time.
SAFE_RESET = "DISCARD ALL"

#: What ``reset="safe"`` runs where psycopg has prepared statements (server-side binding, raw
#: psycopg code): the parts of ``DISCARD ALL`` as PostgreSQL's documentation lists them, but
#: ``DEALLOCATE ALL`` and ``DISCARD PLANS``, and a list of the prepared statements, of which
#: :func:`stray_statements` says which to drop: the borrower's own. psycopg's stay, with their
#: plans: dropping them would cost every later query of theirs a parse and a plan again, more
#: than this reset's three times the server time of ``DISCARD ALL`` (``bench/``).
SAFE_RESET_KEEPING_PREPARED = (
    "CLOSE ALL; SET SESSION AUTHORIZATION DEFAULT; RESET ALL; UNLISTEN *; DISCARD TEMP;"
    " DISCARD SEQUENCES; SELECT pg_advisory_unlock_all(); SELECT name FROM pg_prepared_statements"
)
_ENCODED = {query: query.encode() for query in (SAFE_RESET, SAFE_RESET_KEEPING_PREPARED)}
_RESET_OK = (ExecStatus.COMMAND_OK, ExecStatus.TUPLES_OK)


def reset_query(conn: psycopg.BaseConnection[Any]) -> str:
    """:data:`SAFE_RESET`, or :data:`SAFE_RESET_KEEPING_PREPARED` if psycopg has prepared
    statements on ``conn`` (its cache is private: looked up defensively)."""
    manager = getattr(conn, "_prepared", None)
    keeping = getattr(manager, "_names", None) or getattr(manager, "_to_flush", None)
    return SAFE_RESET_KEEPING_PREPARED if keeping else SAFE_RESET


def stray_statements(conn: psycopg.BaseConnection[Any], names: list[str]) -> list[str]:
    """Of the prepared statements ``names`` the server holds for ``conn``, return those psycopg did
    not prepare (to deallocate); make psycopg forget its cache if the server lacks some of it.

    psycopg's cache (its names, and those it has yet to deallocate) is private, hence looked up
    defensively: without it, every statement is a stray and the cache is forgotten, as after
    ``DISCARD ALL``.
    """
    manager = getattr(conn, "_prepared", None)
    cached = getattr(manager, "_names", None)
    flushing = getattr(manager, "_to_flush", None)
    if cached is None or flushing is None:
        forget_prepared(conn)
        return names
    psycopgs = {name.decode() for name in cached.values()}
    if not psycopgs <= set(names):  # the borrower deallocated some behind psycopg's back
        forget_prepared(conn)
    psycopgs.update(name.decode() for name in flushing if name is not None)
    return [name for name in names if name not in psycopgs]


def _deallocate(names: list[str]) -> sql.Composed:
    return sql.SQL("; ").join(sql.SQL("DEALLOCATE {}").format(sql.Identifier(name)) for name in names)


#: The mark of a connection whose safe reset was sent and whose answer is not read yet.
RESET_SENT = "_hybridpool_reset_sent"

#: The mark of a connection whose safe reset is due and not sent yet: its next statement carries
#: it (:mod:`hybridpool.cursors`), or :func:`flush_reset` sends it.
RESET_PENDING = "_hybridpool_reset_pending"

#: The mark of a connection whose reset was carried into a transaction that has not ended yet:
#: the reset holds if the transaction commits; if it rolls back, so does the reset, which is then
#: pending again (:func:`reset_due`).
RESET_PROVISIONAL = "_hybridpool_reset_provisional"


#: The mark of a connection on which a statement naming ``LISTEN`` ran since it was lent.
LISTENED = "_hybridpool_listened"


def carries_reset(conn: psycopg.Connection[Any] | psycopg.AsyncConnection[Any]) -> bool:
    """True if ``conn``'s next statement can carry its safe reset (:mod:`hybridpool.cursors`):
    one of the ENGINE's connections, with cursors that carry it, for which the reset is plain
    ``DISCARD ALL`` (psycopg has prepared nothing), and whose borrower ran no ``LISTEN`` (carried,
    ``UNLISTEN`` takes effect only as the next borrower's first statement ends)."""
    return (getattr(conn, "carries_reset", False) and getattr(conn.cursor_factory, "carries_reset", False)
            and not getattr(conn, LISTENED, False) and reset_query(conn) == SAFE_RESET)


def reset_due(conn: psycopg.BaseConnection[Any]) -> bool:
    """True if ``conn``'s reset is pending: never sent, or carried into a transaction that ended
    without a commit (:data:`RESET_PROVISIONAL`; a transaction that ended out of sight of
    :class:`~hybridpool.cursors.PooledConnection`'s ``commit()`` counts as rolled back)."""
    if getattr(conn, RESET_PROVISIONAL, False) and conn.pgconn.transaction_status == TransactionStatus.IDLE:
        setattr(conn, RESET_PROVISIONAL, False)
        setattr(conn, RESET_PENDING, True)
    return getattr(conn, RESET_PENDING, False)


def flush_reset(conn: psycopg.Connection[Any]) -> None:
    """Run a pending reset now, on its own (:func:`send_reset` and :func:`finish_reset`): what
    uses the connection cannot carry it. Not in a failed transaction (its carrying statement
    failed; only its rollback, which takes the reset back too, can run): the reset stays pending.

    :raises psycopg.OperationalError: as :func:`finish_reset`.
    """
    if reset_due(conn) and not conn.closed and conn.pgconn.transaction_status == TransactionStatus.IDLE:
        setattr(conn, RESET_PENDING, False)
        send_reset(conn)
        finish_reset(conn)


async def aflush_reset(conn: psycopg.AsyncConnection[Any]) -> None:
    """The async twin of :func:`flush_reset`."""
    if getattr(conn, RESET_PENDING, False) and not conn.closed:
        setattr(conn, RESET_PENDING, False)
        pgconn = conn.pgconn
        handler, pgconn.notify_handler = pgconn.notify_handler, None  # the previous session's notifications
        try:
            await conn.execute(SAFE_RESET, prepare=False)
        finally:
            pgconn.notify_handler = handler
            while pgconn.notifies() is not None:
                pass

#: Longest wait for the answer to a sent reset (s); a server that takes longer is taken for gone.
RESET_TIMEOUT = 10.0

#: Time after which a sent reset has most likely been answered (s): several times the round trip
#: of ``DISCARD ALL`` on a loaded 2-core machine (30-120 µs, ``bench/``).
RESET_SETTLE = 0.001


def settled(conn: psycopg.BaseConnection[Any]) -> bool:
    """True unless ``conn``'s reset was sent less than :data:`RESET_SETTLE` seconds ago: a
    connection :func:`finish_reset` can most likely read at once, without waiting for the server.
    Decided by the clock, without a system call."""
    return not getattr(conn, RESET_SENT, False) or monotonic() - getattr(conn, USED_AT, 0.0) >= RESET_SETTLE


def send_reset(conn: psycopg.Connection[Any]) -> None:
    """Send the safe reset on an idle connection and return without waiting for its answer:
    :data:`SAFE_RESET`, or :data:`SAFE_RESET_KEEPING_PREPARED` if psycopg has prepared statements.

    The returning greenlet is spared a round trip: the server runs the reset while the connection
    waits in the pool, and :func:`finish_reset` reads the answer, usually already there, before
    anyone else gets the connection. Only libpq's asynchronous calls are used (``send_query``;
    psycopg keeps its connections non-blocking), and the connection is marked :data:`RESET_SENT`.

    :raises psycopg.OperationalError: the connection is broken.
    """
    conn.pgconn.send_query(_ENCODED[reset_query(conn)])
    setattr(conn, RESET_SENT, True)


def finish_reset(conn: psycopg.Connection[Any]) -> None:
    """Read the answer to a reset sent by :func:`send_reset`, waiting for it if it has not come.

    The wait is ``select.select``, cooperative once gevent has patched it, and lasts at most
    :data:`RESET_TIMEOUT`. Notifications the previous borrower's ``LISTEN`` received are dropped.

    :raises psycopg.OperationalError: the reset failed, timed out or the connection broke; the
        connection is then closed, so a pool that gets it back discards it.
    """
    if not getattr(conn, RESET_SENT, False):
        return
    setattr(conn, RESET_SENT, False)
    pgconn = conn.pgconn
    deadline = monotonic() + RESET_TIMEOUT
    try:
        while pgconn.flush():  # the rest of the query, had the socket's buffer been full
            _wait_socket(pgconn.socket, deadline, write=True)
        pgconn.consume_input()
        while pgconn.is_busy():
            _wait_socket(pgconn.socket, deadline)
            pgconn.consume_input()
        failure, names = None, []
        while (result := pgconn.get_result()) is not None:
            if result.status not in _RESET_OK:
                failure = (result.error_message or b"").decode(errors="replace").strip()
            elif result.status == ExecStatus.TUPLES_OK and result.nfields == 1:
                names = [cast(bytes, result.get_value(row, 0)).decode() for row in range(result.ntuples)]
        while pgconn.notifies() is not None:
            pass
        if failure is not None:
            raise psycopg.OperationalError(f"the reset failed: {failure}")
        if strays := stray_statements(conn, names):
            conn.execute(_deallocate(strays), prepare=False)  # a borrower's PREPARE: rare
    except psycopg.Error:
        pgconn.finish()
        raise


def _wait_socket(fileno: int, deadline: float, write: bool = False) -> None:
    remaining = deadline - monotonic()
    if remaining <= 0:
        raise psycopg.OperationalError(f"no answer to the reset within {RESET_TIMEOUT} s")
    fds = [fileno]
    select.select([] if write else fds, fds if write else [], [], remaining)


def forget_prepared(conn: psycopg.BaseConnection[Any]) -> None:
    """Make psycopg forget its prepared statements (it deallocates them before its next query).

    psycopg clears its statement cache when it sees ``DISCARD ALL`` only while that command is
    new to its cache: from the second one on it would keep names the server no longer has
    ("prepared statement "_pg3_0" does not exist", checked with psycopg 3.3). Its cache object
    has no public method for this, hence the private attribute, looked up defensively.
    """
    prepared = getattr(conn, "_prepared", None)
    if prepared is not None:
        prepared.clear()


#: Reads the :data:`CLIENT_DEFAULTS` attributes of a connection at once, and their idle values.
_client_state = attrgetter(*(name for name, _ in CLIENT_DEFAULTS))
_IDLE_STATE = tuple(value for _, value in CLIENT_DEFAULTS)


def _changed_attributes(conn: psycopg.BaseConnection[Any]) -> list[tuple[str, Any]]:
    """The :data:`CLIENT_DEFAULTS` that ``conn`` no longer has: call it only if
    ``_client_state(conn) != _IDLE_STATE`` (one C call, the common case on the warm path)."""
    return [(name, value) for name, value in CLIENT_DEFAULTS if getattr(conn, name) != value]


def make_reset(reset: str | Callable[..., Any], *,
               send_only: bool = False) -> Callable[[psycopg.Connection[Any]], None]:
    """Return the function that resets an idle returned connection, per the ``reset`` setting.

    Every variant restores :data:`CLIENT_DEFAULTS` and stamps the connection as used; ``"safe"``
    then marks the reset pending on a connection whose next statement carries it
    (:func:`carries_reset`), else runs it (:func:`send_reset`); a callable runs instead of it and
    must leave the connection idle.

    :param send_only: ``"safe"`` only sends the reset (:func:`send_reset`); the pool must
        then pass the connection to :func:`check_connection` or :func:`finish_reset` before lending it.
    :raises psycopg.Error: if the reset fails; the caller closes the connection.
    """

    def reset_connection(conn: psycopg.Connection[Any]) -> None:
        if _client_state(conn) != _IDLE_STATE:
            for name, value in _changed_attributes(conn):
                setattr(conn, name, value)
        if reset == "safe":
            if carries_reset(conn):
                setattr(conn, RESET_PENDING, True)
                setattr(conn, RESET_PROVISIONAL, False)
            else:
                setattr(conn, LISTENED, False)
                send_reset(conn)
                if not send_only:
                    finish_reset(conn)  # libpq's calls: a third cheaper than psycopg's execute() here
        elif callable(reset):
            reset(conn)
            _check_idle(conn, reset)
        mark_used(conn)

    return reset_connection


def make_areset(reset: str | Callable[..., Any]) -> Callable[[psycopg.AsyncConnection[Any]], Any]:
    """The async twin of :func:`make_reset`; a callable ``reset`` may be a coroutine function."""

    async def reset_connection(conn: psycopg.AsyncConnection[Any]) -> None:
        if _client_state(conn) != _IDLE_STATE:
            for name, value in _changed_attributes(conn):
                await getattr(conn, f"set_{name}")(value)
        if reset == "safe" and carries_reset(conn):
            setattr(conn, RESET_PENDING, True)
        elif reset == "safe":
            setattr(conn, LISTENED, False)
            names = _last_rows(await conn.execute(reset_query(conn), prepare=False))
            if strays := stray_statements(conn, names):
                await conn.execute(_deallocate(strays), prepare=False)
        elif callable(reset):
            result = reset(conn)
            if inspect.isawaitable(result):
                await result
            _check_idle(conn, reset)
        mark_used(conn)

    return reset_connection


def _last_rows(cursor: psycopg.Cursor[Any] | psycopg.AsyncCursor[Any]) -> list[str]:
    """The single column of the last result of a multi-statement query, as strings (results of
    the simple query protocol are already in the client: ``nextset`` does no I/O)."""
    while cursor.nextset():
        pass
    pgresult = cursor.pgresult
    assert pgresult is not None
    return [cast(bytes, pgresult.get_value(row, 0)).decode() for row in range(pgresult.ntuples)]


def _check_idle(conn: psycopg.BaseConnection[Any], function: Any) -> None:
    if conn.pgconn.transaction_status != TransactionStatus.IDLE:
        raise psycopg.ProgrammingError(f"{function!r} left the connection in a transaction")
