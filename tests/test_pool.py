"""The pool contract, one body for every driver (``make_pool`` is parametrized over them)."""

from __future__ import annotations

import logging
import threading
import time

import psycopg
import pytest
from psycopg.pq import TransactionStatus

from hybridpool import PoolClosed, PoolTimeout, TooManyRequests

from .conftest import PeakSampler, run_concurrently, server_connections, terminate, wait_for

STATS_KEYS = {"pool_min", "pool_max", "pool_size", "pool_available", "requests_waiting"}


def backend_pid(conn: psycopg.Connection) -> int:
    return conn.execute("SELECT pg_backend_pid()").fetchone()[0]


def test_cap_holds_with_10x_more_workers_than_max_size(make_pool, capped_user):
    pool = make_pool(max_size=3, kwargs={"user": capped_user(3)})  # the server refuses a 4th connection

    def work(i):
        with pool.connection() as conn:
            conn.execute("SELECT pg_sleep(0.05)")
        return True

    with PeakSampler(pool.app) as sampler:
        results = run_concurrently(work, 30)
    assert results == [True] * 30
    assert sampler.peak == 3  # reached
    assert pool.get_stats().get("connections_errors", 0) == 0  # never passed: no connection was refused
    assert pool.get_stats()["pool_size"] <= 3


def test_waiters_are_served_first_come_first_served(make_pool):
    pool = make_pool(max_size=1)
    holder = pool.getconn()
    served = []

    def waiter(i):
        with pool.connection(timeout=10):
            served.append(i)
            time.sleep(0.01)

    threads = []
    for i in range(5):
        threads.append(threading.Thread(target=waiter, args=(i,)))
        threads[-1].start()
        assert wait_for(lambda: pool.get_stats()["requests_waiting"] == i + 1)
    pool.putconn(holder)
    for thread in threads:
        thread.join(10)
    assert served == [0, 1, 2, 3, 4]


@pytest.mark.timing
def test_timeout_raises_pool_timeout_in_time_naming_the_pool(make_pool):
    pool = make_pool(max_size=1, timeout=0.3)
    holder = pool.getconn()
    started = time.monotonic()
    with pytest.raises(PoolTimeout) as raised:
        pool.getconn()
    elapsed = time.monotonic() - started
    pool.putconn(holder)
    assert 0.3 <= elapsed <= 1.0  # the timeout, plus a margin for a loaded machine
    message = str(raised.value)
    assert f"pool {pool.name!r}" in message
    assert "max_size=1" in message
    assert "1 connections in use" in message
    assert "1 callers waiting" in message
    assert "0.30 s" in message
    assert isinstance(raised.value, psycopg.OperationalError)


@pytest.mark.timing
def test_getconn_timeout_argument_overrides_the_setting(make_pool):
    pool = make_pool(max_size=1, timeout=10)
    holder = pool.getconn()
    started = time.monotonic()
    with pytest.raises(PoolTimeout, match="0.20 s"):
        pool.getconn(timeout=0.2)
    assert time.monotonic() - started <= 1.0  # 0.2 s, not the pool's 10 s
    pool.putconn(holder)


@pytest.mark.timing
def test_max_waiting_refuses_at_once(make_pool):
    pool = make_pool(max_size=1, max_waiting=1)
    holder = pool.getconn()
    waiting = threading.Thread(target=lambda: pool.putconn(pool.getconn(timeout=5)))
    waiting.start()
    assert wait_for(lambda: pool.get_stats()["requests_waiting"] == 1)
    started = time.monotonic()
    with pytest.raises(TooManyRequests, match="max_waiting=1"):
        pool.getconn(timeout=5)
    assert time.monotonic() - started < 1.0  # at once, not after the 5 s timeout
    pool.putconn(holder)
    waiting.join(5)


@pytest.mark.parametrize("reset", ["safe", "rollback"])  # the thread driver runs "rollback" in putconn
def test_open_transaction_is_rolled_back_on_return(make_pool, conninfo, reset):
    pool = make_pool(max_size=1, reset=reset)
    with psycopg.connect(conninfo, autocommit=True) as admin:
        admin.execute("CREATE TABLE IF NOT EXISTS pool_rollback (x int)")
    conn = pool.getconn()
    pid = backend_pid(conn)
    conn.autocommit = False
    conn.read_only = False
    conn.isolation_level = psycopg.IsolationLevel.SERIALIZABLE
    conn.execute("INSERT INTO pool_rollback VALUES (1)")
    assert conn.info.transaction_status == TransactionStatus.INTRANS
    pool.putconn(conn)

    conn = pool.getconn()
    assert backend_pid(conn) == pid  # the same connection, cleaned
    assert conn.autocommit and conn.read_only is None and conn.isolation_level is None
    assert conn.info.transaction_status == TransactionStatus.IDLE
    assert conn.execute("SELECT count(*) FROM pool_rollback").fetchone()[0] == 0
    pool.putconn(conn)


def test_failed_transaction_is_rolled_back_on_return(make_pool):
    pool = make_pool(max_size=1)
    conn = pool.getconn()
    pid = backend_pid(conn)
    conn.autocommit = False
    with pytest.raises(psycopg.errors.DivisionByZero):
        conn.execute("SELECT 1 / 0")
    assert conn.info.transaction_status == TransactionStatus.INERROR
    pool.putconn(conn)

    with pool.connection() as conn:
        assert backend_pid(conn) == pid
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_terminated_connection_is_replaced_within_the_checkout(make_pool):
    pool = make_pool(min_size=1, max_size=1)
    with pool.connection() as conn:
        pid = backend_pid(conn)
    assert terminate(pool.app) == 1
    # Used a moment ago, so no round trip would be due: the socket tells it is dead.
    with pool.connection() as conn:
        assert backend_pid(conn) != pid
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_check_replaces_broken_idle_connections(make_pool):
    pool = make_pool(min_size=2, max_size=2)
    pool.wait(5)
    assert terminate(pool.app) == 2
    pool.check()
    assert wait_for(lambda: server_connections(pool.app) == 2)
    with pool.connection() as first, pool.connection() as second:
        assert first.execute("SELECT 1").fetchone() == (1,)
        assert second.execute("SELECT 1").fetchone() == (1,)


def test_a_warm_checkout_sends_nothing_to_the_server(make_pool, tmp_path):
    """Invariant 3: a connection used within the last second goes out unchecked, no round trip
    (libpq's trace of the connection records every message it sends or receives)."""
    pool = make_pool(max_size=1, reset="rollback")  # check="auto", the default; a reset sends nothing
    with pool.connection() as conn:
        conn.execute("SELECT 1")
    trace = tmp_path / "libpq-trace"
    with trace.open("w") as out:
        conn.pgconn.trace(out.fileno())
        try:
            with pool.connection() as again:
                assert again is conn
            again = pool.getconn()
            pool.putconn(again)
        finally:
            conn.pgconn.untrace()
    assert trace.read_text() == ""
    with trace.open("w") as out:  # the trace does record what is sent: a statement shows
        conn.pgconn.trace(out.fileno())
        try:
            with pool.connection() as again:
                again.execute("SELECT 1")
        finally:
            conn.pgconn.untrace()
    assert "Query" in trace.read_text()


def test_max_lifetime_closes_an_old_connection_on_return(make_pool):
    pool = make_pool(min_size=1, max_size=1, max_lifetime=0.3)
    conn = pool.getconn()
    pid = backend_pid(conn)
    time.sleep(0.4)
    pool.putconn(conn)
    with pool.connection() as conn:
        assert backend_pid(conn) != pid
    assert wait_for(lambda: server_connections(pool.app) == 1)


def test_max_idle_closes_surplus_connections(make_pool):
    pool = make_pool(min_size=1, max_size=3, max_idle=0.3)
    barrier = threading.Barrier(3, timeout=5)

    def hold(i):
        with pool.connection() as conn:
            barrier.wait()
            return backend_pid(conn)

    assert len(set(run_concurrently(hold, 3))) == 3
    assert server_connections(pool.app) == 3
    assert wait_for(lambda: server_connections(pool.app) == 1, timeout=5)
    assert pool.get_stats()["pool_size"] == 1


@pytest.mark.parametrize("check", ["auto", "never"])  # the green driver reads its reset's answer in either
def test_safe_reset_leaves_nothing_for_the_next_borrower(make_pool, check):
    pool = make_pool(max_size=1, check=check)
    with pool.connection() as conn:
        pid = backend_pid(conn)
        conn.execute("SET statement_timeout = '1234ms'")
        conn.execute("SET search_path = pg_catalog")
        conn.execute("SELECT pg_advisory_lock(42)")
        conn.execute("CREATE TEMP TABLE scratch (x int)")
        conn.execute("PREPARE leaked AS SELECT 1")
        conn.execute("LISTEN somewhere")
    with pool.connection() as conn:
        assert backend_pid(conn) == pid
        assert conn.execute("SHOW statement_timeout").fetchone() == ("0",)
        assert conn.execute("SHOW search_path").fetchone() == ('"$user", public',)
        assert conn.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = %s", [pid]).fetchone() == (0,)
        assert conn.execute("SELECT to_regclass('pg_temp.scratch')").fetchone() == (None,)
        assert conn.execute("SELECT count(*) FROM pg_prepared_statements").fetchone() == (0,)
        assert conn.execute("SELECT count(*) FROM pg_listening_channels()").fetchone() == (0,)


def test_a_reset_that_fails_discards_the_connection_within_the_next_checkout(make_pool):
    pool = make_pool(min_size=1, max_size=1)
    with pool.connection() as conn:
        pid = backend_pid(conn)
    assert terminate(pool.app) == 1  # gone while its reset ran (or before): the answer is an error
    with pool.connection() as conn:
        assert backend_pid(conn) != pid
    assert pool.get_stats()["pool_size"] == 1


def test_rollback_reset_keeps_session_state(make_pool):
    pool = make_pool(max_size=1, reset="rollback")
    with pool.connection() as conn:
        conn.execute("SET statement_timeout = '1234ms'")
    with pool.connection() as conn:
        assert conn.execute("SHOW statement_timeout").fetchone() == ("1234ms",)


def test_callable_reset_runs_and_a_bad_one_discards_the_connection(make_pool):
    calls = []

    def reset(conn):
        calls.append(conn)
        if len(calls) == 2:
            conn.execute("BEGIN")  # leaves a transaction open: the pool must not lend it

    pool = make_pool(max_size=1, reset=reset)
    pids = []
    for _ in range(3):
        with pool.connection() as conn:
            pids.append(backend_pid(conn))
        assert wait_for(lambda: len(calls) == len(pids))
    assert pids[0] == pids[1] != pids[2]


def test_psycopg_prepared_statements_survive_many_resets(make_pool):
    pool = make_pool(max_size=1)
    for _ in range(10):
        with pool.connection() as conn:
            for _ in range(6):  # past psycopg's prepare_threshold of 5
                assert conn.execute("SELECT %s::int", [7]).fetchone() == (7,)


def test_safe_reset_keeps_psycopg_s_prepared_statements_and_drops_the_borrower_s(make_pool):
    pool = make_pool(max_size=1)
    query = "SELECT %s::int + 1"
    with pool.connection() as conn:
        for _ in range(6):  # psycopg prepares it (prepare_threshold 5)
            conn.execute(query, [1])
        conn.execute("PREPARE mine AS SELECT 1")
    with pool.connection() as conn:
        names = {name for (name,) in conn.execute("SELECT name FROM pg_prepared_statements", prepare=False)}
        assert "mine" not in names
        assert {name for name in names if name.startswith("_pg3_")}  # psycopg's statement stayed
        assert conn.execute(query, [1]).fetchone() == (2,)  # and it still works
    with pool.connection() as conn:  # the borrower dropped psycopg's statements behind its back
        conn.execute("DEALLOCATE ALL")
    with pool.connection() as conn:
        for _ in range(7):
            assert conn.execute(query, [2]).fetchone() == (3,)


def test_closed_pool_refuses_callers(make_pool):
    pool = make_pool()
    pool.close()
    with pytest.raises(PoolClosed):
        pool.getconn()


def test_connection_of_another_pool_is_refused(make_pool):
    first, second = make_pool(), make_pool()
    conn = first.getconn()
    with pytest.raises(ValueError):
        second.putconn(conn)
    first.putconn(conn)


def test_stats_count_what_happened_under_psycopg_pool_s_keys(make_pool):
    pool = make_pool(min_size=1, max_size=2)
    assert wait_for(lambda: pool.get_stats()["pool_available"] == 1)
    with pool.connection(), pool.connection():  # the idle one, then one the pool grows for
        during = pool.get_stats()
    after = pool.get_stats()
    assert STATS_KEYS <= during.keys()
    assert (during["pool_min"], during["pool_max"], during["pool_size"], during["pool_available"]) == (1, 2, 2, 0)
    assert during["requests_waiting"] == 0
    assert (after["pool_size"], after["pool_available"]) == (2, 2)
    assert (after["requests_num"], after["requests_queued"], after["connections_num"]) == (2, 1, 2)
    assert after.get("requests_errors", 0) == after.get("returns_bad", 0) == after.get("connections_lost", 0) == 0
    assert after["usage_ms"] >= 0 and after["requests_wait_ms"] >= 0


@pytest.mark.timing
def test_connections_left_by_ended_borrowers_are_reclaimed(make_pool):
    pool = make_pool(max_size=3, timeout=10)

    def forget(i):  # takes a connection and ends without giving it back
        conn = pool.getconn()
        return conn.execute("SELECT %s::int", [i]).fetchone()[0]

    started = time.monotonic()
    assert run_concurrently(forget, 12) == list(range(12))  # 4 rounds of 3, served as strays come back
    assert time.monotonic() - started < 8
    assert wait_for(lambda: pool.get_stats()["pool_available"] == pool.get_stats()["pool_size"])
    assert server_connections(pool.app) <= 3


@pytest.mark.timing
def test_a_pool_opened_by_its_constructor_reclaims_strays_too(make_pool):
    pool = make_pool(max_size=1, timeout=10, opened_by_constructor=True)
    assert run_concurrently(lambda i: pool.getconn().execute("SELECT 1").fetchone()[0], 1) == [1]  # never returned
    with pool.connection(timeout=5) as conn:  # the stray's slot, taken back
        assert conn.execute("SELECT 2").fetchone()[0] == 2


def test_leak_timeout_reports_the_borrower_s_stack(make_pool, caplog):
    pool = make_pool(max_size=1, leak_timeout=0.2)
    with caplog.at_level(logging.WARNING, logger="hybridpool"), pool.connection():
        assert wait_for(lambda: any("held for" in r.getMessage() for r in caplog.records), timeout=3)
    (report,) = [r.getMessage() for r in caplog.records if "held for" in r.getMessage()]
    assert f"a connection of pool {pool.name!r} has been held for" in report
    assert "(leak_timeout=0.2)" in report
    assert "test_leak_timeout_reports_the_borrower_s_stack" in report  # where it was taken


@pytest.mark.timing
def test_no_request_fails_after_every_pooled_backend_is_terminated(make_pool):
    pool = make_pool(min_size=5, max_size=5)
    barrier = threading.Barrier(5, timeout=5)

    def warm(i):  # all five connections recently used: no checkout would need a round trip
        with pool.connection() as conn:
            barrier.wait()
            return backend_pid(conn)

    before = set(run_concurrently(warm, 5))
    assert terminate(pool.app) == 5

    def request(i):
        with pool.connection() as conn:
            return backend_pid(conn)

    started = time.monotonic()
    first = request(0)  # meets the five dead connections in a row, and replaces them at once
    assert time.monotonic() - started < 0.8  # psycopg_pool's backoff would sleep 0.9-1.1 s, then twice that
    after = run_concurrently(request, 50)
    assert not [r for r in after if isinstance(r, Exception)]  # 0 of 50 failed
    assert not before & {first, *after}
    assert server_connections(pool.app) <= 5


def test_an_abandoned_result_stream_is_cancelled_and_its_connection_closed(make_pool):
    pool = make_pool(min_size=1, max_size=1)
    conn = pool.getconn()
    pid = backend_pid(conn)
    rows = conn.cursor().stream("SELECT generate_series(1, 10000000)")
    assert next(rows) == (1,)
    assert conn.info.transaction_status == TransactionStatus.ACTIVE
    pool.putconn(conn)  # unconsumed: the pool must not lend it, nor leave the query running
    assert wait_for(lambda: conn.closed)  # psycopg_pool returns in a worker thread
    with pool.connection() as fresh:
        assert backend_pid(fresh) != pid
    assert wait_for(lambda: server_connections(pool.app) == 1, timeout=2)


def test_a_connection_whose_borrower_outlives_the_pool_s_close_is_closed_when_it_ends(make_pool):
    pool = make_pool(max_size=2)
    holding, release = threading.Event(), threading.Event()

    def stray():  # takes a connection, outlives the pool's close, ends without giving it back
        conn = pool.getconn()
        conn.execute("SELECT 1")
        holding.set()
        release.wait(5)

    borrower = threading.Thread(target=stray)
    borrower.start()
    assert holding.wait(5)
    pool.close()
    assert server_connections(pool.app) == 1  # lent: not closed under its borrower
    release.set()
    borrower.join(5)
    assert wait_for(lambda: server_connections(pool.app) == 0, timeout=5)
