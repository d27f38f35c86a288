"""The at-once decisions of a checkout and a return agree with the procedures they stand for.

A pool runs :func:`hybridpool.lifecycle.lendable` and :func:`~hybridpool.lifecycle.returned_at_once`
before the sans-I/O procedures :func:`~hybridpool.lifecycle.check` and
:func:`~hybridpool.lifecycle.clean_returned` (:func:`hybridpool.steps.bind`'s ``at_once``): on real
connections in each state, an at-once yes must be a case where the procedure would wait for
nothing, and an at-once no must leave the connection as it was, for the procedure to run.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from hybridpool import lifecycle, reset
from hybridpool.cursors import PooledConnection, ResettingCursor
from hybridpool.readiness import readable_now

from .conftest import wait_for

MARKS = (lifecycle.USED_AT, reset.RESET_PENDING, reset.RESET_PROVISIONAL, reset.RESET_SENT, reset.LISTENED)


def ops_of(procedure: Any) -> tuple[list[str], Any]:
    """The ops ``procedure`` would wait for (each answered with None, none run), and its result
    (or the exception it raised)."""
    seen: list[str] = []
    value: Any = None
    try:
        while True:
            seen.append(type(procedure.send(value)).__name__)
    except StopIteration as stop:
        return seen, stop.value
    except psycopg.Error as ex:
        return seen, ex


def state(conn: psycopg.Connection[Any]) -> tuple[Any, ...]:
    return (conn.pgconn.transaction_status, conn.autocommit, *(getattr(conn, mark, None) for mark in MARKS))


@pytest.fixture
def connect(conninfo: str) -> Any:
    opened: list[psycopg.Connection[Any]] = []

    def connect(carrying: bool = True) -> psycopg.Connection[Any]:
        conn: psycopg.Connection[Any] = (
            PooledConnection.connect(conninfo, autocommit=True, cursor_factory=ResettingCursor) if carrying
            else psycopg.Connection.connect(conninfo, autocommit=True))
        conn._pool = None  # type: ignore[assignment]  # as a pool's connection: no ResourceWarning
        lifecycle.mark_used(conn)
        opened.append(conn)
        return conn

    yield connect
    for conn in opened:
        conn.pgconn.finish()


def _notified(conn: psycopg.Connection[Any], conninfo: str) -> None:
    conn.execute("LISTEN hybridpool_lifecycle")
    with psycopg.connect(conninfo, autocommit=True) as other:
        other.execute("NOTIFY hybridpool_lifecycle")
    assert wait_for(lambda: readable_now(conn.pgconn.socket))


def _stale(conn: psycopg.Connection[Any], conninfo: str) -> None:
    setattr(conn, lifecycle.USED_AT, time.monotonic() - 2 * lifecycle.RECENT)


CHECKOUTS: dict[str, tuple[Callable[[psycopg.Connection[Any], str], Any], Any, bool]] = {
    "warm and quiet": (lambda conn, conninfo: None, "auto", True),
    "never checked": (_stale, "never", True),
    "unused for over a second": (_stale, "auto", False),
    "always checked": (lambda conn, conninfo: None, "always", False),
    "a check callable": (lambda conn, conninfo: None, lambda conn: None, False),
    "a notification waiting": (_notified, "auto", False),
    "its reset sent, unread": (lambda conn, conninfo: reset.send(conn), "auto", False),
    "closed behind the pool's back": (lambda conn, conninfo: conn.close(), "never", False),
}


@pytest.mark.parametrize("case", CHECKOUTS)
def test_a_checkout_decided_at_once_is_one_the_check_would_wait_for_nothing(case, connect, conninfo):
    prepare, policy, expected = CHECKOUTS[case]
    conn = connect()
    prepare(conn, conninfo)
    before = state(conn)
    assert lifecycle.lendable(conn, policy) is expected
    assert state(conn) == before  # decided, nothing done
    ops, outcome = ops_of(lifecycle.check(conn, policy))
    worked = bool(ops) or isinstance(outcome, psycopg.Error) or state(conn) != before
    assert worked is not expected, (ops, outcome)


def _in_transaction(conn: psycopg.Connection[Any]) -> None:
    conn.autocommit = False
    conn.execute("SELECT 1")


def _out_of_autocommit(conn: psycopg.Connection[Any]) -> None:
    conn.autocommit = False


def _listened(conn: psycopg.Connection[Any]) -> None:
    conn.execute("LISTEN hybridpool_lifecycle")


RETURNS: dict[str, tuple[Callable[[psycopg.Connection[Any]], Any], Any, bool, bool]] = {
    # case: (what the borrower did, reset policy, a carrying connection, done at once)
    "idle, rollback": (lambda conn: None, "rollback", True, True),
    "idle, safe, carried": (lambda conn: None, "safe", True, True),
    "idle, safe, not carried (a plain psycopg connection)": (lambda conn: None, "safe", False, False),
    "idle, safe, after LISTEN": (_listened, "safe", True, False),
    "in a transaction": (_in_transaction, "rollback", True, False),
    "out of autocommit": (_out_of_autocommit, "rollback", True, False),
    "a reset callable": (lambda conn: None, lambda conn: None, True, False),
}


@pytest.mark.parametrize("case", RETURNS)
def test_a_return_done_at_once_is_what_the_procedure_does_without_waiting(case, connect):
    borrowed, policy, carrying, expected = RETURNS[case]
    done_at_once, by_procedure = connect(carrying), connect(carrying)
    for conn in (done_at_once, by_procedure):
        borrowed(conn)
        setattr(conn, lifecycle.USED_AT, 1.0)
    before = state(done_at_once)
    assert lifecycle.returned_at_once(done_at_once, policy, send_only=True) is expected
    ops, clean = ops_of(lifecycle.clean_returned(by_procedure, policy, send_only=True))
    if not expected:
        assert state(done_at_once) == before  # nothing done: the procedure runs next
        assert ops or getattr(by_procedure, reset.RESET_SENT, False)  # it waits, or sends the reset
        return
    assert (ops, clean) == ([], True)  # the procedure too would have waited for nothing and sent nothing
    assert not getattr(by_procedure, reset.RESET_SENT, False)
    assert state(done_at_once)[3:] == state(by_procedure)[3:]  # marked as the procedure marks it (USED_AT aside)
    assert getattr(done_at_once, lifecycle.USED_AT) > 1.0  # stamped used
