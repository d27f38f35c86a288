"""The connection and cursor classes of the ENGINE's pools: the safe reset rides on the next statement.

``reset="safe"`` resets the session between two borrowers. Sent on its own as ``DISCARD ALL``, it
is one more network write and one more wake of the PostgreSQL backend per request, which
Django's pool does not pay: it resets nothing. The ENGINE's connections instead carry the reset
as *pending* (:data:`~hybridpool.reset.RESET_PENDING`): nothing is sent when they are
returned, and the next borrower's first statement goes in one simple-protocol query after the
parts of ``DISCARD ALL`` (:data:`CARRIED`; ``DISCARD ALL`` itself cannot run in the implicit
transaction of a multi-statement query): one write, one wake. The cursor then presents the
statement's result, past the reset's. The reset runs before the statement, on the server, in the
same message: nothing of the previous borrower reaches it.

A statement carries the reset only when it can: a ``str`` of one statement that reads or writes
rows (:data:`CARRIABLE`), run by a client-side-binding cursor (Django's default: psycopg's simple
query protocol takes several statements), in autocommit or as the first statement of a
transaction (Django's ``atomic()``, ``ATOMIC_REQUESTS``: psycopg sends ``BEGIN``, then the reset
and the statement). Anything else first sends the reset on its own and waits for it
(:func:`hybridpool.reset.flush`): psycopg's ``transaction()``, another kind of statement,
a pipeline, a server-side or binary cursor, ``executemany``, ``copy``, ``stream``, ``notifies``,
two-phase commit. If the statement fails, its transaction (implicit, or the one it began) takes
the reset's changes back with it: the reset is pending again, and the borrower's next statement
carries it. A reset carried into a transaction holds once ``commit()`` succeeds; a transaction
that ends any other way (a rollback, a failed commit, ``COMMIT`` sent as SQL) leaves it pending
again (:data:`~hybridpool.reset.RESET_PROVISIONAL`). A borrower that ran ``LISTEN``
gets its reset sent on return, as for any other pool (``UNLISTEN``, carried, would only take
effect as the next borrower's first statement ends). Notifications received while the carried
reset runs are the previous borrower's: they are dropped.

The async pool's connections carry it the same way, for ``NativeQuerySet``'s reads only
(:class:`AsyncResettingCursor`).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import psycopg
from django.db.backends.postgresql.base import Cursor as DjangoCursor
from psycopg.pq import TransactionStatus

from . import reset, steps

if TYPE_CHECKING:  # django-stubs leave out its psycopg base, psycopg's ClientCursor with psycopg 3
    class _DjangoCursor(DjangoCursor, psycopg.ClientCursor[Any]): ...
else:
    _DjangoCursor = DjangoCursor

#: The reset a statement carries: ``DISCARD ALL``'s parts, as PostgreSQL's documentation lists
#: them (``DISCARD ALL`` itself cannot run in the implicit transaction of a multi-statement query).
CARRIED = ("CLOSE ALL", "SET SESSION AUTHORIZATION DEFAULT", "RESET ALL", "DEALLOCATE ALL", "UNLISTEN *",
           "SELECT pg_advisory_unlock_all()", "DISCARD PLANS", "DISCARD TEMP", "DISCARD SEQUENCES")
CARRIER = "; ".join(CARRIED) + ";\n"
_CARRIER_BYTES = CARRIER.encode("ascii")  # the same bytes in any client encoding PostgreSQL has

#: The statements that may carry the reset: one statement (no ``;`` but a last one) that reads
#: or writes rows. Not a transaction control (``BEGIN`` would take the reset into a transaction
#: the borrower may roll back), nor ``SET`` (``SET TRANSACTION`` must come first), nor anything
#: that cannot run in a transaction block (``VACUUM``): those send the reset on their own first.
CARRIABLE = re.compile(r"\s*(?:(?:select|insert|update|delete|with|values|table|show)\b[^;]*;?\s*)?$",
                       re.IGNORECASE | re.DOTALL)


def _carrying(cursor: Any, query: Any, kwargs: dict[str, Any], *, into_transaction: bool = False) -> bool:
    """Whether ``cursor``'s ``execute(query, **kwargs)`` can carry its connection's pending reset:
    in autocommit, or ``into_transaction`` the one psycopg begins for it."""
    conn = cursor.connection
    return (isinstance(query, str) and CARRIABLE.match(query) is not None
            and (conn.autocommit or into_transaction)
            and not kwargs.get("binary") and conn._pipeline is None
            and conn.pgconn.transaction_status == TransactionStatus.IDLE)


def _present_statement(cursor: Any) -> None:
    """Show the borrower's statement alone once it ran: its result the cursor's current one, past
    the reset's (psycopg's private ``_select_current_result``, 3.0-3.3, in one step where it has
    it, else ``nextset()`` once per result of the reset), and the query the cursor reports
    (``cursor.query``, which Django's ``connection.queries`` records) without the reset."""
    select = getattr(cursor, "_select_current_result", None)
    results = getattr(cursor, "_results", None)
    if select is not None and isinstance(results, list) and len(results) > len(CARRIED):
        select(len(CARRIED))
    else:
        for _ in CARRIED:
            cursor.nextset()
    sent = getattr(cursor, "_query", None)
    if sent is not None and isinstance(sent.query, bytes) and sent.query.startswith(_CARRIER_BYTES):
        sent.query = sent.query[len(_CARRIER_BYTES):]


class _Carry:
    """Around the execute that carries the reset: the previous session's notifications, received
    until the reset runs, are dropped rather than handed to the new borrower. If the execute
    fails, the reset is pending again: the borrower's statement failed, and the implicit
    transaction of the message took the reset's changes back with it; or it was never sent, or
    was interrupted. The borrower's next statement carries it, or whatever else uses the
    connection sends it first (:func:`~hybridpool.reset.flush`)."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn

    def __enter__(self) -> None:
        setattr(self.conn, reset.RESET_PENDING, False)
        pgconn = self.conn.pgconn
        self.handler, pgconn.notify_handler = pgconn.notify_handler, None

    def __exit__(self, kind: Any, ex: BaseException | None, traceback: Any) -> None:
        if self.conn.closed:
            return
        pgconn = self.conn.pgconn
        pgconn.notify_handler = self.handler
        while pgconn.notifies() is not None:
            pass
        if ex is not None:
            setattr(self.conn, reset.RESET_PENDING, True)


#: A statement that names ``LISTEN``: its borrower's reset is not carried.
LISTEN = re.compile(r"\blisten\b", re.IGNORECASE)


def _note_listen(conn: Any, query: Any) -> None:
    """Mark ``conn`` if ``query`` names ``LISTEN`` (a substring test first: on every statement)."""
    if not isinstance(query, str) or (("isten" in query or "ISTEN" in query) and LISTEN.search(query)):
        setattr(conn, reset.LISTENED, True)


def _flush(conn: psycopg.Connection[Any]) -> None:
    """Run ``conn``'s pending reset on its own (:func:`hybridpool.reset.flush`), if it has one."""
    if reset.reset_due(conn):
        steps.run(reset.flush(conn), conn)


class ResettingCursor(_DjangoCursor):
    """Django's client-side-binding cursor, carrying its connection's pending reset (module doc)."""

    carries_reset = True

    def execute(self, query: Any, params: Any = None, **kwargs: Any) -> Any:
        conn = self.connection
        _note_listen(conn, query)
        if reset.reset_due(conn):
            if not _carrying(self, query, kwargs, into_transaction=True):
                _flush(conn)
            else:
                with _Carry(conn):
                    super().execute(CARRIER + query, params, **kwargs)
                setattr(conn, reset.RESET_PROVISIONAL, not conn.autocommit)
                _present_statement(self)
                return self
        return super().execute(query, params, **kwargs)

    def executemany(self, *args: Any, **kwargs: Any) -> Any:
        _flush(self.connection)
        return super().executemany(*args, **kwargs)

    def copy(self, *args: Any, **kwargs: Any) -> Any:
        _flush(self.connection)
        return super().copy(*args, **kwargs)

    def stream(self, *args: Any, **kwargs: Any) -> Any:
        _flush(self.connection)
        return super().stream(*args, **kwargs)


class PooledConnection(psycopg.Connection[Any]):
    """The ENGINE's pooled connection: whatever uses it other than a :class:`ResettingCursor`'s
    ``execute`` sends its pending reset first."""

    carries_reset = True

    def commit(self) -> None:
        super().commit()
        setattr(self, reset.RESET_PROVISIONAL, False)  # a reset carried into it holds

    def cursor(self, *args: Any, **kwargs: Any) -> Any:
        cursor = super().cursor(*args, **kwargs)
        if not isinstance(cursor, ResettingCursor):  # a server-side cursor, another factory's
            _flush(self)
        return cursor

    def transaction(self, *args: Any, **kwargs: Any) -> Any:
        _flush(self)
        return super().transaction(*args, **kwargs)

    def pipeline(self) -> Any:
        _flush(self)
        return super().pipeline()

    def notifies(self, *args: Any, **kwargs: Any) -> Any:
        _flush(self)
        return super().notifies(*args, **kwargs)

    def tpc_begin(self, *args: Any, **kwargs: Any) -> Any:
        _flush(self)
        return super().tpc_begin(*args, **kwargs)


class AsyncResettingCursor(psycopg.AsyncClientCursor[Any]):
    """The async pool's client-side-binding cursor, carrying its connection's pending reset. The
    async pool lends a connection with its reset pending only to ``NativeQuerySet``'s reads, which
    use this cursor's ``execute`` alone; any other borrower gets it reset
    (:meth:`hybridpool.asgi.LoopPool.getconn`)."""

    carries_reset = True

    async def execute(self, query: Any, params: Any = None, **kwargs: Any) -> Any:
        _note_listen(self.connection, query)
        if reset.reset_due(self.connection):
            if not _carrying(self, query, kwargs):
                await steps.arun(reset.flush(self.connection), self.connection)
            else:
                with _Carry(self.connection):
                    await super().execute(CARRIER + query, params, **kwargs)
                _present_statement(self)
                return self
        return await super().execute(query, params, **kwargs)
