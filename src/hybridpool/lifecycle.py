"""What every driver does to one connection when it opens, lends and takes it back: configure,
liveness check, what a return needs, reset.

Each is a sans-I/O procedure (:mod:`hybridpool.steps`), written once for the sync and the async
pools, which run it with :func:`hybridpool.steps.bind`. They touch only the connection they are
given; every driver runs them itself, in its own ``getconn`` and ``putconn`` (the psycopg_pool
driver gives psycopg_pool no ``check`` or ``reset`` callback: see
:func:`hybridpool.asgi.pool.pool_arguments`), so all apply the same policy (docs/design.md
invariants 3 and 4).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from operator import attrgetter
from time import monotonic
from typing import Any

import psycopg
from psycopg.pq import TransactionStatus

from . import reset as safe
from .readiness import readable_now
from .steps import Call, Cancel, Execute, Rollback, SetAttribute, Steps

logger = logging.getLogger("hybridpool")

#: A connection used more recently than this (seconds) goes out without a round trip.
RECENT = 1.0

#: The attribute holding a pooled connection's last return (monotonic seconds).
USED_AT = "_hybridpool_used_at"

#: Longest wait for the server to accept the cancellation of an abandoned query (s).
CANCEL_TIMEOUT = 5.0

#: What a returned connection needs, by its transaction status (:func:`on_return`).
REUSE, ROLLBACK, CANCEL, CLOSE = "reuse", "rollback", "cancel", "close"

#: The attributes psycopg keeps client side, and their value in an idle pooled connection.
CLIENT_DEFAULTS = (("autocommit", True), ("isolation_level", None), ("read_only", None), ("deferrable", None))

#: Reads the :data:`CLIENT_DEFAULTS` attributes of a connection at once, and their idle values.
_client_state = attrgetter(*(name for name, _ in CLIENT_DEFAULTS))
_IDLE_STATE = tuple(value for _, value in CLIENT_DEFAULTS)


def mark_used(conn: psycopg.BaseConnection[Any]) -> None:
    """Stamp ``conn`` as used now."""
    setattr(conn, USED_AT, monotonic())


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
    return not _goes_unchecked(conn, policy)


def _goes_unchecked(conn: psycopg.BaseConnection[Any], policy: str) -> bool:
    """:func:`needs_check`'s answer for an open connection, negated."""
    return policy == "never" or (policy == "auto" and monotonic() - getattr(conn, USED_AT, 0.0) < RECENT
                                 and _socket_quiet(conn))


def lendable(conn: psycopg.BaseConnection[Any], policy: str | Callable[..., Any] = "auto") -> bool:
    """:func:`check`'s common case, decided on the spot (:func:`hybridpool.steps.bind`'s
    ``at_once``): True if ``conn`` goes out as it is: no reset answer to read, not closed, and no
    check due (:func:`needs_check`); False if :func:`check` must run. Never raises, never waits."""
    return (not callable(policy) and not getattr(conn, safe.RESET_SENT, False) and not conn.closed
            and _goes_unchecked(conn, policy))


def check(conn: psycopg.BaseConnection[Any], policy: str | Callable[..., Any] = "auto") -> Steps[None]:
    """Check that ``conn`` works before it is lent; the contract of psycopg_pool's ``check``.

    ``policy`` is the ``check`` setting: one of :func:`needs_check`'s, or a callable doing the
    check (a coroutine function too, for the async pool). A reset sent on return is read first
    (:func:`hybridpool.reset.read`), whatever the policy.

    :raises psycopg.OperationalError: if the connection is broken.
    """
    if getattr(conn, safe.RESET_SENT, False):
        yield from safe.read(conn)
    if callable(policy):
        yield Call(policy)
    elif needs_check(conn, policy):
        yield Execute("")  # every idle pooled connection is in autocommit: no BEGIN


def configure(conn: psycopg.BaseConnection[Any], function: Callable[..., Any] | None = None) -> Steps[None]:
    """What runs on each new connection: stamp it as used, then the ``configure`` setting
    ``function`` (a coroutine function too, for the async pool).

    :raises psycopg.ProgrammingError: ``function`` left the connection in a transaction.
    """
    mark_used(conn)
    if function is not None:
        yield Call(function)
        _check_idle(conn, function)


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


def clean_returned(conn: psycopg.BaseConnection[Any], policy: str | Callable[..., Any] = "safe", *,
                   send_only: bool = False) -> Steps[bool]:
    """Bring a returned connection back to the idle state (:func:`on_return`) and reset it
    (:func:`reset`); return False if it must be closed instead: broken, in the middle of a query
    (cancelled first), or its rollback or reset failed.

    Any other exception, an interruption above all (``gevent.Timeout``, ``GreenletExit``,
    ``KeyboardInterrupt``, ``CancelledError``), leaves the connection in an unknown state: the
    caller closes it.
    """
    action = on_return(conn.pgconn.transaction_status)
    if action == CANCEL:
        logger.warning("connection returned in the middle of a query, closing it: %s", conn)
        yield from _cancel_query()
    if action in (CANCEL, CLOSE):
        return False
    try:
        if action == ROLLBACK:
            yield Rollback()
        yield from reset(conn, policy, send_only=send_only)
    except psycopg.Error as ex:
        logger.warning("error cleaning a returned connection, closing it: %s", ex)
        return False
    return True


def returned_at_once(conn: psycopg.BaseConnection[Any], policy: str | Callable[..., Any] = "safe",
                     **settings: Any) -> bool:
    """:func:`clean_returned`'s common case, done on the spot (:func:`hybridpool.steps.bind`'s
    ``at_once``; ``settings`` are :func:`clean_returned`'s others): for a connection returned
    idle, with psycopg's client defaults, whose reset needs no wait (``"rollback"``, or a safe
    reset its next statement carries: marked pending), stamp it as used and return True; else
    change nothing and return False (:func:`clean_returned` must run)."""
    if (conn.pgconn.transaction_status != TransactionStatus.IDLE or _client_state(conn) != _IDLE_STATE
            or not (policy == "rollback" or (policy == "safe" and safe.carries_reset(conn)))):
        return False
    if policy == "safe":
        safe.mark_pending(conn)
    mark_used(conn)
    return True


def _cancel_query() -> Steps[None]:
    """Ask the server to stop the query a returned connection is in the middle of.

    Closing the connection alone would leave the server running the query until it next writes
    to the socket (a ``pg_sleep`` to its end, a large result to the first full buffer). psycopg's
    ``cancel_safe`` waits cooperatively (under gevent too); failure to cancel is logged only,
    since the connection is closed next anyway.
    """
    try:
        yield Cancel(CANCEL_TIMEOUT)
    except (psycopg.Error, OSError) as ex:
        logger.warning("cancelling the query of a returned connection failed: %s", ex)


def reset(conn: psycopg.BaseConnection[Any], policy: str | Callable[..., Any] = "safe", *,
          send_only: bool = False) -> Steps[None]:
    """Reset an idle returned connection per the ``reset`` setting ``policy``.

    Every policy restores :data:`CLIENT_DEFAULTS` and stamps the connection as used; ``"safe"``
    runs :func:`hybridpool.reset.reset` (``send_only``: the pool reads its answer at the next
    checkout, in :func:`check`); a callable (a coroutine function too, for the async pool) runs
    instead and must leave the connection idle; ``"rollback"`` does nothing more.

    :raises psycopg.Error: the reset failed; the caller closes the connection.
    """
    if _client_state(conn) != _IDLE_STATE:  # one C call: the common case on the warm path
        for name, value in CLIENT_DEFAULTS:
            if getattr(conn, name) != value:
                yield SetAttribute(name, value)
    if policy == "safe":
        yield from safe.reset(conn, send_only=send_only)
    elif callable(policy):
        yield Call(policy)
        _check_idle(conn, policy)
    mark_used(conn)


def _check_idle(conn: psycopg.BaseConnection[Any], function: Any) -> None:
    if conn.pgconn.transaction_status != TransactionStatus.IDLE:
        raise psycopg.ProgrammingError(f"{function!r} left the connection in a transaction")
