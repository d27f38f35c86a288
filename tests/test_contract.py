"""The pool contract, one body for every kind of pool the process can run (issue 12).

An adapter gives the green pool, the thread pool and the async pool one synchronous API, so that
each body below drives all three. The async pool (:class:`~hybridpool.asgi.pool.LoopPool`) is
created, opened and used on an event loop in a thread of its own: every call is a task on that
loop, so the borrowers of :func:`run_concurrently` (threads, or greenlets under gevent) are as
many tasks waiting in the pool. Plain run: thread + async; under gevent's patching: green +
thread + async.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from typing import Any

import psycopg
import pytest
from psycopg.pq import TransactionStatus

from hybridpool import PoolClosed, PoolConfig, PoolTimeout, TooManyRequests, create_pool
from hybridpool.asgi.pool import LoopPool

from .conftest import GEVENT, PeakSampler, run_concurrently, terminate, wait_for

KINDS = (["green"] if GEVENT else []) + ["thread", "async"]


class Adapter:
    """A green or thread pool behind the adapter's API; ``app`` is its name and application_name."""

    def __init__(self, kind: str, conninfo: str, loop: asyncio.AbstractEventLoop,
                 kwargs: dict[str, Any] | None = None, **settings: Any) -> None:
        self.kind, self.loop, self.app = kind, loop, f"hp-{uuid.uuid4().hex[:10]}"
        kwargs = {"application_name": self.app, **(kwargs or {})}
        self.pool = self._make(conninfo, kwargs, {"min_size": 1, "timeout": 5, **settings, "name": self.app})

    def _make(self, conninfo: str, kwargs: dict[str, Any], settings: dict[str, Any]) -> Any:
        return create_pool(conninfo, kwargs=kwargs, driver="gevent" if self.kind == "green" else "thread", **settings)

    def _run(self, value: Any) -> Any:
        """What a pool method returned: here the value itself; the async adapter awaits it."""
        return value

    def getconn(self, timeout: float | None = None) -> Any:
        return self._run(self.pool.getconn(timeout))

    def putconn(self, conn: Any) -> None:
        self._run(self.pool.putconn(conn))

    def execute(self, conn: Any, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
        cursor = conn.execute(sql, params)
        return cursor.fetchall() if cursor.description else []

    def set_autocommit(self, conn: Any, value: bool) -> None:
        conn.autocommit = value

    def get_stats(self) -> dict[str, int]:
        return self.pool.get_stats()

    def close(self) -> None:
        self._run(self.pool.close())

    def backend_pid(self, conn: Any) -> int:
        return self.execute(conn, "SELECT pg_backend_pid()")[0][0]


class LoopAdapter(Adapter):
    """A :class:`LoopPool` made, opened and used on ``loop``, which runs in a thread of its own."""

    def _make(self, conninfo: str, kwargs: dict[str, Any], settings: dict[str, Any]) -> Any:
        async def make() -> LoopPool[Any]:
            pool: LoopPool[Any] = LoopPool(conninfo, kwargs=kwargs, config=PoolConfig.from_mapping(settings))
            await pool.open()
            return pool

        return self._run(make())

    def _run(self, coro: Any, timeout: float = 30.0) -> Any:
        """Run ``coro`` as a task on the pool's loop and wait for its result (bounded)."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def execute(self, conn: Any, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
        async def execute() -> list[tuple[Any, ...]]:
            cursor = await conn.execute(sql, params)
            return await cursor.fetchall() if cursor.description else []

        return self._run(execute())

    def set_autocommit(self, conn: Any, value: bool) -> None:
        self._run(conn.set_autocommit(value))

    def get_stats(self) -> dict[str, int]:
        async def stats() -> dict[str, int]:  # read in the loop that changes them
            return self.pool.get_stats()

        return self._run(stats())


def new_pool(kind: str, conninfo: str, loop: asyncio.AbstractEventLoop, **settings: Any) -> Adapter:
    """A pool of ``kind`` (``min_size=1, timeout=5`` unless told otherwise), opened."""
    return (LoopAdapter if kind == "async" else Adapter)(kind, conninfo, loop, **settings)


@pytest.fixture(scope="module")
def loop() -> Any:
    """The event loop of the async pools, running in a thread of its own: one for all, as under
    gevent's patching every "thread" is a greenlet of one OS thread, which asyncio lets run one
    loop at a time."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield loop
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)
    loop.close()


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    """The kind of pool under test: "green", "thread" or "async"."""
    return request.param


@pytest.fixture
def make(kind: str, conninfo: str, loop: asyncio.AbstractEventLoop) -> Any:
    """Build pools of the kind under test; they are closed after the test."""
    pools: list[Adapter] = []

    def make(**settings: Any) -> Adapter:
        pools.append(new_pool(kind, conninfo, loop, **settings))
        return pools[-1]

    yield make
    for pool in pools:
        pool.close()


class Caller(threading.Thread):
    """A caller that borrows a connection of ``pool`` (waiting up to 5 s) and gives it back."""

    def __init__(self, pool: Adapter) -> None:
        super().__init__()
        self.pool = pool
        self.outcome: str | Exception | None = None

    def run(self) -> None:
        try:
            self.pool.putconn(self.pool.getconn(timeout=5))
            self.outcome = "served"
        except Exception as ex:  # for the test to assert on
            self.outcome = ex

    def result(self) -> Any:
        """"served", or what the caller raised, once it ended (10 s at most)."""
        self.join(10)
        assert not self.is_alive(), "the caller did not end in time"
        return self.outcome


def kill_backend(conninfo: str, pid: int) -> None:
    """End one server connection, waiting until it is gone."""
    with psycopg.connect(conninfo, autocommit=True) as admin:
        assert admin.execute("SELECT pg_terminate_backend(%s, 5000)", [pid]).fetchone() == (True,)


def test_cap_holds_under_10x_more_concurrent_borrowers(make, capped_user):
    pool = make(max_size=3, kwargs={"user": capped_user(3)})  # the server refuses a 4th connection

    def work(i):
        conn = pool.getconn(timeout=10)
        try:
            return pool.execute(conn, "SELECT %s::int FROM pg_sleep(0.05)", [i])[0][0]
        finally:
            pool.putconn(conn)

    with PeakSampler(pool.app) as sampler:
        assert run_concurrently(work, 30) == list(range(30))
    assert sampler.peak == 3  # reached, never passed
    stats = pool.get_stats()
    assert stats.get("connections_errors", 0) == 0  # no connection refused by the role's limit
    assert stats["pool_size"] <= 3


def test_waiters_are_served_first_come_first_served(make):
    pool = make(max_size=1)
    holder = pool.getconn()
    served = []

    def waiter(i):
        conn = pool.getconn(timeout=10)
        served.append(i)
        pool.putconn(conn)

    threads = []
    for i in range(5):
        threads.append(threading.Thread(target=waiter, args=(i,)))
        threads[-1].start()
        assert wait_for(lambda: pool.get_stats()["requests_waiting"] == i + 1)  # queued in this order
    pool.putconn(holder)
    for thread in threads:
        thread.join(10)
        assert not thread.is_alive()
    assert served == [0, 1, 2, 3, 4]


@pytest.mark.timing
def test_timeout_raises_pool_timeout_naming_the_pool(make):
    pool = make(max_size=1)
    holder = pool.getconn()
    started = time.monotonic()
    with pytest.raises(PoolTimeout) as raised:
        pool.getconn(timeout=0.3)
    elapsed = time.monotonic() - started
    pool.putconn(holder)
    assert 0.3 <= elapsed <= 1.0  # the timeout, plus a margin for a loaded machine
    assert str(raised.value) == (
        f"couldn't get a connection after 0.30 s from pool {pool.app!r}: max_size=1, 1 connections in use,"
        " 1 callers waiting"
    )


@pytest.mark.timing
def test_max_waiting_refuses_at_once(make):
    pool = make(max_size=1, max_waiting=1)
    holder = pool.getconn()
    waiting = Caller(pool)
    waiting.start()
    assert wait_for(lambda: pool.get_stats()["requests_waiting"] == 1)
    started = time.monotonic()
    with pytest.raises(TooManyRequests) as raised:
        pool.getconn(timeout=5)
    assert time.monotonic() - started < 1.0  # at once, not after the 5 s timeout
    pool.putconn(holder)
    assert waiting.result() == "served"
    assert str(raised.value) == (
        f"max_waiting=1 reached in pool {pool.app!r}: max_size=1, 1 connections in use, 1 callers waiting"
    )


def test_a_caller_that_timed_out_no_longer_counts_as_waiting(make):
    pool = make(max_size=1, max_waiting=1)
    holder = pool.getconn()
    with pytest.raises(PoolTimeout):
        pool.getconn(timeout=0.1)
    waiting = pool.get_stats()["requests_waiting"]
    caller = Caller(pool)  # the only caller waiting: within max_waiting
    caller.start()
    assert wait_for(lambda: pool.get_stats()["requests_waiting"] == 1 or not caller.is_alive())
    pool.putconn(holder)
    assert (waiting, caller.result()) == (0, "served")


@pytest.mark.parametrize("failed", [False, True], ids=["open", "failed"])
def test_a_transaction_left_open_is_rolled_back_on_return(make, conninfo, failed):
    with psycopg.connect(conninfo, autocommit=True) as admin:
        admin.execute("CREATE TABLE IF NOT EXISTS contract_rollback (app text)")
    pool = make(max_size=1)
    conn = pool.getconn()
    pid = pool.backend_pid(conn)
    pool.set_autocommit(conn, False)
    pool.execute(conn, "INSERT INTO contract_rollback VALUES (%s)", [pool.app])
    if failed:
        with pytest.raises(psycopg.errors.DivisionByZero):
            pool.execute(conn, "SELECT 1 / 0")
    assert conn.info.transaction_status == (TransactionStatus.INERROR if failed else TransactionStatus.INTRANS)
    pool.putconn(conn)

    conn = pool.getconn()
    assert pool.backend_pid(conn) == pid  # the same connection, cleaned
    assert conn.autocommit
    assert conn.info.transaction_status == TransactionStatus.IDLE
    assert pool.execute(conn, "SELECT count(*) FROM contract_rollback WHERE app = %s", [pool.app]) == [(0,)]
    pool.putconn(conn)


def test_safe_reset_leaves_nothing_for_the_next_borrower(make):
    pool = make(max_size=1, reset="safe")
    conn = pool.getconn()
    pid = pool.backend_pid(conn)
    for statement in ("SET statement_timeout = '1234ms'", "CREATE TEMP TABLE scratch (x int)",
                      "SELECT pg_advisory_lock(42)"):
        pool.execute(conn, statement)
    pool.putconn(conn)

    conn = pool.getconn()
    assert pool.backend_pid(conn) == pid
    assert pool.execute(conn, "SHOW statement_timeout") == [("0",)]
    assert pool.execute(conn, "SELECT to_regclass('pg_temp.scratch')") == [(None,)]
    assert pool.execute(conn, "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = %s", [pid]) == [(0,)]
    pool.putconn(conn)


@pytest.mark.timing
def test_a_terminated_backend_is_replaced_within_the_checkout(make):
    pool = make(min_size=1, max_size=1)
    conn = pool.getconn()
    pid = pool.backend_pid(conn)
    pool.putconn(conn)
    assert terminate(pool.app) == 1
    started = time.monotonic()
    conn = pool.getconn()
    assert time.monotonic() - started < 0.8  # at once: psycopg_pool's check backoff would sleep ~1 s
    assert pool.backend_pid(conn) != pid
    pool.putconn(conn)


def test_putconn_of_another_pool_s_connection_raises_value_error(make):
    first, second = make(), make()
    conn = first.getconn()
    first.execute(conn, "SET statement_timeout = '1234ms'")
    first.set_autocommit(conn, False)
    first.execute(conn, "SELECT 1")  # a transaction: its borrower's
    refused = f"^can't return connection to pool {second.app!r}, it comes from pool {first.app!r}"
    with pytest.raises(ValueError, match=refused):
        second.putconn(conn)
    assert conn.info.transaction_status == TransactionStatus.INTRANS  # untouched: neither rolled back nor reset
    assert first.execute(conn, "SHOW statement_timeout") == [("1234ms",)]
    first.putconn(conn)  # still the first pool's, and taken back
    assert wait_for(lambda: first.get_stats()["pool_available"] == first.get_stats()["pool_size"] == 1)


def test_a_closed_pool_refuses_with_pool_closed(make):
    pool = make()
    pool.close()
    with pytest.raises(PoolClosed) as raised:
        pool.getconn()
    assert str(raised.value) == f"the pool {pool.app!r} is already closed"


# -- stats: the same scenario on every pool, the same numbers


def scenario(pool: Adapter, conninfo: str) -> tuple[dict[str, int], dict[str, int]]:
    """5 sequential checkouts, one request refused by ``max_waiting``, one timed out, one
    connection broken while lent and returned, one idle connection broken and replaced at
    checkout: the stats once settled; then one request refused by the closed pool: the stats."""
    ready = lambda: pool.get_stats()["pool_available"] == 1  # noqa: E731
    assert wait_for(ready)
    for i in range(5):
        conn = pool.getconn()
        assert pool.execute(conn, "SELECT %s::int FROM pg_sleep(0.002)", [i]) == [(i,)]  # lent >= 2 ms
        pool.putconn(conn)
    holder = pool.getconn()
    waiting = Caller(pool)
    waiting.start()
    assert wait_for(lambda: pool.get_stats()["requests_waiting"] == 1)
    with pytest.raises(TooManyRequests):
        pool.getconn()
    pool.putconn(holder)
    assert waiting.result() == "served"
    holder = pool.getconn()
    with pytest.raises(PoolTimeout):
        pool.getconn(timeout=0.1)
    pool.putconn(holder)  # psycopg_pool's queue forgets the timed-out caller only now
    broken = pool.getconn()
    kill_backend(conninfo, pool.backend_pid(broken))
    with pytest.raises(psycopg.OperationalError):
        pool.execute(broken, "SELECT 1")
    pool.putconn(broken)  # returns_bad
    assert wait_for(ready)  # the pool opens another one
    assert terminate(pool.app) == 1  # the idle one
    conn = pool.getconn()  # connections_lost, and a new one within the checkout
    pool.execute(conn, "SELECT 1")
    pool.putconn(conn)
    assert wait_for(ready)
    settled = pool.get_stats()
    pool.close()
    with pytest.raises(PoolClosed):
        pool.getconn()
    return settled, pool.get_stats()


#: The scenario's numbers, the same for every pool (min_size=1, max_size=1, max_waiting=1).
EXPECTED = {"requests_num": 12, "requests_errors": 2, "returns_bad": 1, "connections_lost": 1,
            "pool_min": 1, "pool_max": 1, "pool_size": 1, "pool_available": 1, "requests_waiting": 0}


@pytest.fixture(scope="module")
def scenario_stats(conninfo: str, loop: asyncio.AbstractEventLoop) -> dict[str, tuple[dict[str, int], dict[str, int]]]:
    """The stats of each kind of pool after :func:`scenario`, settled and after the pool closed."""
    stats = {}
    for kind in KINDS:
        pool = new_pool(kind, conninfo, loop, min_size=1, max_size=1, max_waiting=1)
        try:
            stats[kind] = scenario(pool, conninfo)
        finally:
            pool.close()
    return stats


@pytest.mark.parametrize("key", EXPECTED)
def test_stats_agree_after_the_same_scenario(scenario_stats, key):
    values = {kind: settled.get(key, 0) for kind, (settled, _) in scenario_stats.items()}
    assert values == dict.fromkeys(KINDS, EXPECTED[key])


def test_usage_ms_counts_every_lent_connection(scenario_stats, kind):
    settled, _ = scenario_stats[kind]
    assert settled.get("usage_ms", 0) >= 5 * 2  # 5 leases of 2 ms at least, and more


def test_a_request_refused_by_a_closed_pool_is_counted_as_psycopg_pool_counts_it(scenario_stats, kind):
    settled, closed = scenario_stats[kind]
    counted = {key: closed.get(key, 0) - settled.get(key, 0) for key in ("requests_num", "requests_errors")}
    assert counted == {"requests_num": 1, "requests_errors": 0}
