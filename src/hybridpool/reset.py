"""The safe reset (``reset="safe"``), written once as sans-I/O procedures (:mod:`hybridpool.steps`)
for the sync and the async pools: choose the statement, send it, read and interpret the answer.

The statement (:func:`statement`) is ``DISCARD ALL``, or its parts but the deallocation of psycopg's
prepared statements where psycopg has some. It is sent with libpq's non-blocking ``send_query``;
the sync pools return without reading the answer (the server runs the reset while the connection
waits in the pool) and read it before the connection is lent again (:func:`read`). The answer names
the prepared statements the server holds; the borrower's own, if any, are deallocated
(:func:`stray_statements`). Notifications the previous borrower's ``LISTEN`` received are dropped.

A connection of the ENGINE whose next statement can carry the reset is only marked
:data:`RESET_PENDING`: :mod:`hybridpool.cursors` sends ``DISCARD ALL`` in front of that statement,
in the same round trip, or runs it on its own (:func:`flush`) before anything that cannot carry it.
"""

from __future__ import annotations

from time import monotonic
from typing import Any, cast

import psycopg
from psycopg import sql
from psycopg.pq import ExecStatus, TransactionStatus

from .steps import Execute, Steps, WaitSocket

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

#: Longest wait for the answer to a sent reset (s); a server that takes longer is taken for gone.
RESET_TIMEOUT = 10.0

#: Time after which a sent reset has most likely been answered (s): several times the round trip
#: of ``DISCARD ALL`` on a loaded 2-core machine (30-120 µs, ``bench/``).
RESET_SETTLE = 0.001

#: The mark of a connection whose safe reset was sent and whose answer is not read yet: when it
#: was sent (monotonic seconds), or absent (falsy).
RESET_SENT = "_hybridpool_reset_sent"

#: The mark of a connection whose safe reset is due and not sent yet: its next statement carries
#: it (:mod:`hybridpool.cursors`), or :func:`flush` runs it.
RESET_PENDING = "_hybridpool_reset_pending"

#: The mark of a connection whose reset was carried into a transaction that has not ended yet:
#: the reset holds if the transaction commits; if it rolls back, so does the reset, which is then
#: pending again (:func:`reset_due`).
RESET_PROVISIONAL = "_hybridpool_reset_provisional"

#: The mark of a connection on which a statement naming ``LISTEN`` ran since it was lent.
LISTENED = "_hybridpool_listened"


def statement(conn: psycopg.BaseConnection[Any]) -> str:
    """:data:`SAFE_RESET`, or :data:`SAFE_RESET_KEEPING_PREPARED` if psycopg has prepared
    statements on ``conn`` (its cache is private: looked up defensively)."""
    manager = getattr(conn, "_prepared", None)
    keeping = getattr(manager, "_names", None) or getattr(manager, "_to_flush", None)
    return SAFE_RESET_KEEPING_PREPARED if keeping else SAFE_RESET


def reset(conn: psycopg.BaseConnection[Any], *, send_only: bool = False) -> Steps[None]:
    """Reset an idle connection: mark it :data:`RESET_PENDING` if its next statement carries the
    reset (:func:`carries_reset`), else send the reset and, unless ``send_only``, read its answer
    (:func:`read`). With ``send_only`` the pool must run :func:`read` before lending it again.

    :raises psycopg.Error: the reset failed; the caller closes the connection.
    """
    if carries_reset(conn):
        mark_pending(conn)
        return
    setattr(conn, LISTENED, False)
    send(conn)
    if not send_only:
        yield from read(conn, just_sent=True)


def mark_pending(conn: psycopg.BaseConnection[Any]) -> None:
    """Mark ``conn``'s reset :data:`RESET_PENDING`: its next statement carries it
    (:func:`carries_reset` said it can)."""
    setattr(conn, RESET_PENDING, True)
    setattr(conn, RESET_PROVISIONAL, False)


def send(conn: psycopg.BaseConnection[Any]) -> None:
    """Send the safe reset (:func:`statement`) on an idle connection with libpq's non-blocking
    ``send_query`` (psycopg keeps its connections non-blocking), and mark it :data:`RESET_SENT`.

    :raises psycopg.OperationalError: the connection is broken.
    """
    conn.pgconn.send_query(_ENCODED[statement(conn)])
    setattr(conn, RESET_SENT, monotonic())


def read(conn: psycopg.BaseConnection[Any], *, just_sent: bool = False) -> Steps[None]:
    """Read the answer to a reset :func:`send` sent, if any, waiting at most
    :data:`RESET_TIMEOUT` for it; drop the notifications received for the previous borrower;
    deallocate the borrower's prepared statements.

    A reset sent on an earlier return is most likely answered: its input is read first, without
    a wait. One ``just_sent`` cannot be: the wait comes first (psycopg's order), so the procedure
    always waits once for it, whatever the timing.

    :raises psycopg.OperationalError: the reset failed, timed out or the connection broke; the
        connection is then closed, so a pool that gets it back discards it.
    """
    if not getattr(conn, RESET_SENT, False):
        return
    setattr(conn, RESET_SENT, 0.0)
    pgconn = conn.pgconn
    deadline = monotonic() + RESET_TIMEOUT
    try:
        while pgconn.flush():  # the rest of the query, had the socket's buffer been full
            yield WaitSocket(deadline, "the reset", write=True)
        if not just_sent:
            pgconn.consume_input()
        while pgconn.is_busy():
            yield WaitSocket(deadline, "the reset")
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
            yield Execute(_deallocate(strays))  # a borrower's PREPARE: rare
    except psycopg.Error:
        pgconn.finish()
        raise


def settled(conn: psycopg.BaseConnection[Any]) -> bool:
    """True unless ``conn``'s reset was sent less than :data:`RESET_SETTLE` seconds ago: a
    connection :func:`read` can most likely read at once, without waiting for the server.
    Decided by the clock, without a system call."""
    sent: float = getattr(conn, RESET_SENT, 0.0)
    return not sent or monotonic() - sent >= RESET_SETTLE


def flush(conn: psycopg.BaseConnection[Any]) -> Steps[None]:
    """Run a pending reset now, on its own: what uses the connection cannot carry it. Not in a
    failed transaction (its carrying statement failed; only its rollback, which takes the reset
    back too, can run): the reset stays pending.

    :raises psycopg.OperationalError: as :func:`read`.
    """
    if reset_due(conn) and not conn.closed and conn.pgconn.transaction_status == TransactionStatus.IDLE:
        setattr(conn, RESET_PENDING, False)
        send(conn)
        yield from read(conn, just_sent=True)


def carries_reset(conn: psycopg.BaseConnection[Any]) -> bool:
    """True if ``conn``'s next statement can carry its safe reset (:mod:`hybridpool.cursors`):
    one of the ENGINE's connections, with cursors that carry it, for which the reset is plain
    ``DISCARD ALL`` (psycopg has prepared nothing), and whose borrower ran no ``LISTEN`` (carried,
    ``UNLISTEN`` takes effect only as the next borrower's first statement ends)."""
    return (getattr(conn, "carries_reset", False) and getattr(getattr(conn, "cursor_factory", None), "carries_reset", False)
            and not getattr(conn, LISTENED, False) and statement(conn) == SAFE_RESET)


def reset_due(conn: psycopg.BaseConnection[Any]) -> bool:
    """True if ``conn``'s reset is pending: never sent, or carried into a transaction that ended
    without a commit (:data:`RESET_PROVISIONAL`; a transaction that ended out of sight of
    :class:`~hybridpool.cursors.PooledConnection`'s ``commit()`` counts as rolled back)."""
    if getattr(conn, RESET_PROVISIONAL, False) and conn.pgconn.transaction_status == TransactionStatus.IDLE:
        setattr(conn, RESET_PROVISIONAL, False)
        setattr(conn, RESET_PENDING, True)
    return getattr(conn, RESET_PENDING, False)


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
