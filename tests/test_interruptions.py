"""An interrupted borrower never costs a slot nor shares a connection (docs/design.md invariants 1 and 4).

Every driver, and the async pool, is interrupted at each point where checkout, use and return wait
on the server (:mod:`tests.interrupt`); after each, every slot is accounted for: nothing is lent,
every open server connection is idle in the pool, and the next borrower is served at once.
Under gevent's patching the green driver and the psycopg_pool driver (``driver="thread"``, its
threads being greenlets) get ``gevent.Timeout`` and ``GreenletExit``; unpatched, the psycopg_pool
driver's threads get ``KeyboardInterrupt`` and the async pool's tasks ``CancelledError``.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from typing import Any

import psycopg
import pytest

from hybridpool import PoolConfig, create_pool
from hybridpool.asgi import LoopPool

from . import interrupt
from .conftest import GEVENT, server_connections, wait_for

#: The drivers this pass can interrupt: greenlets under gevent, threads and tasks without it.
DRIVERS = ["gevent", "thread"] if GEVENT else ["thread", "async"]

#: Pool settings: one connection, so a lost slot shows at once as a timeout; every checkout
#: checks with a round trip, so the check is a point where a borrower waits.
SETTINGS: dict[str, Any] = {"min_size": 1, "max_size": 1, "timeout": 3, "check": "always"}


def cycle(pool: Any, mode: str) -> None:
    """A borrower. ``"block"``: ``with pool.connection()``, a query. ``"close"``: as Django gives a
    connection back, by ``close()``, here with a transaction left open for the return to roll back."""
    if mode == "block":
        with pool.connection() as conn:
            conn.execute("SELECT 1")
        return
    conn = pool.getconn()
    try:
        conn.execute("BEGIN")
        conn.execute("SELECT 1")
    finally:
        conn.close()


async def acycle(pool: LoopPool, mode: str) -> None:
    if mode == "block":
        async with pool.connection() as conn:
            await conn.execute("SELECT 1")
        return
    conn = await pool.getconn()
    try:
        await conn.execute("BEGIN")
        await conn.execute("SELECT 1")
    finally:
        await conn.close()


MODES = ["block", "close"]


def accounted(pool: Any, app: str, conninfo: str) -> bool:
    """Nothing lent, the pool full to ``min_size``, and each open server connection one of its idle ones."""
    stats = pool.get_stats()
    return (stats["pool_size"] == stats["pool_available"] == pool.min_size
            and len(getattr(pool, "leases", ())) == 0
            and server_connections(app, conninfo) == stats["pool_size"])


def assert_every_slot_accounted(pool: Any, app: str, conninfo: str) -> None:
    assert wait_for(lambda: accounted(pool, app, conninfo), timeout=10), (pool.get_stats(), server_connections(app, conninfo))
    first = pool.getconn(timeout=1)  # served at once: no slot was lost
    try:
        with pytest.raises(psycopg.OperationalError):  # and it is the only one: max_size=1
            pool.getconn(timeout=0.1)
    finally:
        pool.putconn(first)


@pytest.fixture
def app() -> str:
    return f"hp-int-{uuid.uuid4().hex[:8]}"


def make(conninfo: str, app: str, driver: str, **settings: Any) -> Any:
    return create_pool(conninfo, kwargs={"application_name": app}, driver=driver, **{**SETTINGS, **settings})


async def amake(conninfo: str, app: str, **settings: Any) -> LoopPool:
    pool = LoopPool(conninfo, kwargs={"application_name": app}, config=PoolConfig(**{**SETTINGS, **settings}))
    await pool.open()
    return pool


def exceptions() -> list[BaseException]:
    import gevent

    return [gevent.Timeout(), gevent.GreenletExit()]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("driver", DRIVERS)
def test_a_borrower_interrupted_at_each_wait_costs_no_slot(driver, mode, conninfo, app):
    if driver == "async":
        return asyncio.run(_async_interrupted_at_each_wait(conninfo, app, mode))
    pool = make(conninfo, app, driver)
    try:
        pool.wait(5)

        def run(k: int) -> bool:
            if GEVENT:
                return interrupt.in_greenlet(lambda: cycle(pool, mode), k, exceptions()[k % 2])
            return interrupt.in_thread(lambda: cycle(pool, mode), k)

        points = interrupt.every_point(run, lambda: assert_every_slot_accounted(pool, app, conninfo))
        assert points >= 3  # at least the check, the query and the return's work
    finally:
        pool.close()


async def _async_interrupted_at_each_wait(conninfo: str, app: str, mode: str) -> None:
    pool = await amake(conninfo, app)
    try:
        async def after_each() -> None:
            deadline = time.monotonic() + 10
            while not await asyncio.to_thread(accounted, pool, app, conninfo):
                assert time.monotonic() < deadline, (pool.get_stats(), server_connections(app, conninfo))
                await asyncio.sleep(0.02)
            first = await pool.getconn(timeout=1)
            with pytest.raises(psycopg.OperationalError):
                await pool.getconn(timeout=0.1)
            await pool.putconn(first)

        points = await interrupt.aevery_point(lambda k: interrupt.in_task(lambda: acycle(pool, mode), k),
                                              after_each)
        assert points >= 3
    finally:
        await pool.close()


@pytest.mark.parametrize("driver", DRIVERS)
def test_a_connection_returned_twice_is_refused_and_never_lent_twice(driver, conninfo, app):
    if driver == "async":
        return asyncio.run(_async_returned_twice(conninfo, app))
    pool = make(conninfo, app, driver, max_size=2, check="never")
    try:
        conn = pool.getconn()
        pool.putconn(conn)
        with pytest.raises(ValueError, match="can't return connection"):
            pool.putconn(conn)
        conn.close()  # a stale holder's close() after the block: not a return either
        first, second = pool.getconn(), pool.getconn()
        assert first is not second
        assert first.execute("SELECT 1").fetchone() == (1,)  # a connection closed behind the pool's
        assert second.execute("SELECT 1").fetchone() == (1,)  # back is never lent, whatever the check
        pool.putconn(first)
        pool.putconn(second)
    finally:
        pool.close()


async def _async_returned_twice(conninfo: str, app: str) -> None:
    pool = await amake(conninfo, app, max_size=2, check="never")
    try:
        conn = await pool.getconn()
        await pool.putconn(conn)
        with pytest.raises(ValueError, match="can't return connection"):
            await pool.putconn(conn)
        await conn.close()
        first, second = await pool.getconn(), await pool.getconn()
        assert first is not second
        assert await (await first.execute("SELECT 1")).fetchone() == (1,)
        assert await (await second.execute("SELECT 1")).fetchone() == (1,)
        await pool.putconn(first)
        await pool.putconn(second)
    finally:
        await pool.close()


#: The storm: rounds of borrowers, each under a random deadline of 0-4 ms; half leave a transaction
#: open, a fifth are killed at random; the pool idles more than a second between rounds, so that
#: checkouts check liveness with a round trip.
ROUNDS, BORROWERS, MAX_SIZE = 4, 400, 3


@pytest.mark.parametrize("driver", DRIVERS)
def test_a_storm_of_timeouts_and_kills_loses_no_slot(driver, conninfo, app):
    if driver == "async":
        return asyncio.run(_async_storm(conninfo, app))
    if not GEVENT:
        pytest.skip("an OS thread cannot be timed out or killed: the injector's KeyboardInterrupt covers threads")
    import gevent

    pool = make(conninfo, app, driver, min_size=MAX_SIZE, max_size=MAX_SIZE, timeout=5, check="auto")
    rng = random.Random(10)
    try:
        def borrower(i: int) -> None:
            try:
                with gevent.Timeout(rng.uniform(0, 0.004)):
                    cycle(pool, MODES[i % 2])
            except gevent.Timeout:
                pass

        for _ in range(ROUNDS):
            greenlets = [gevent.spawn(borrower, i) for i in range(BORROWERS)]
            gevent.sleep(0)
            for victim in rng.sample(greenlets, BORROWERS // 5):
                victim.kill(block=False)
            gevent.joinall(greenlets, timeout=60)
            assert all(g.dead for g in greenlets)
            gevent.sleep(1.1)
        assert wait_for(lambda: pool.get_stats()["pool_available"] == pool.get_stats()["pool_size"] == MAX_SIZE,
                        timeout=10), pool.get_stats()
        assert server_connections(app, conninfo) == MAX_SIZE
        held = [pool.getconn(timeout=2) for _ in range(MAX_SIZE)]  # every slot serves
        assert len({id(conn) for conn in held}) == MAX_SIZE
        for conn in held:
            pool.putconn(conn)
    finally:
        pool.close()


async def _async_storm(conninfo: str, app: str) -> None:
    pool = await amake(conninfo, app, min_size=MAX_SIZE, max_size=MAX_SIZE, timeout=5, check="auto")
    rng = random.Random(10)
    try:
        async def borrower(i: int) -> None:
            try:
                async with asyncio.timeout(rng.uniform(0, 0.004)):
                    await acycle(pool, MODES[i % 2])
            except TimeoutError:
                pass

        for _ in range(ROUNDS):
            tasks = [asyncio.create_task(borrower(i)) for i in range(BORROWERS)]
            await asyncio.sleep(0)
            for victim in rng.sample(tasks, BORROWERS // 5):
                victim.cancel()
            await asyncio.wait(tasks, timeout=60)
            assert all(task.done() for task in tasks)
            await asyncio.sleep(1.1)
        deadline = time.monotonic() + 10
        while not (pool.get_stats()["pool_available"] == pool.get_stats()["pool_size"] == MAX_SIZE):
            assert time.monotonic() < deadline, pool.get_stats()
            await asyncio.sleep(0.02)
        assert await asyncio.to_thread(server_connections, app, conninfo) == MAX_SIZE
        held = [await pool.getconn(timeout=2) for _ in range(MAX_SIZE)]
        assert len({id(conn) for conn in held}) == MAX_SIZE
        for conn in held:
            await pool.putconn(conn)
    finally:
        await pool.close()
