"""Native async code: ``aconnection()`` and the async ORM (ASGI deployments, never gevent-patched).

The ``aconnection()`` tests use an alias of their own: an async pool shares its alias's
``application_name`` with the alias's ORM pool, and the ORM tests count that name's connections.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time

import psycopg
import pytest
from asgiref.sync import async_to_sync, sync_to_async
from django.conf import settings
from django.db import connections

import hybridpool
from tests.testapp.models import Item

from .conftest import ASYNC_MAX_SIZE, GEVENT, PeakSampler, run_concurrently, server_connections, wait_for

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.skipif(GEVENT, reason="asyncio code does not run under gevent monkey-patching"),
]


@pytest.fixture
def anyio_backend():
    return "asyncio"


async def test_aconnection_lends_an_async_connection_and_takes_it_back():
    async with hybridpool.aconnection("asyncapp") as aconn:
        assert isinstance(aconn, psycopg.AsyncConnection)
        cursor = await aconn.execute("SELECT %s::int * 2", [21])
        assert await cursor.fetchone() == (42,)
        pool = await hybridpool.aget_pool("asyncapp")
        assert pool.get_stats()["pool_available"] < pool.get_stats()["pool_size"]
    for _ in range(100):  # the reset runs in a background task
        stats = pool.get_stats()
        if stats["pool_size"] == stats["pool_available"]:
            break
        await asyncio.sleep(0.01)
    assert stats["pool_size"] == stats["pool_available"]


async def test_aconnection_transaction_rolls_back_on_error():
    with pytest.raises(ZeroDivisionError):
        async with hybridpool.aconnection("asyncapp") as aconn, aconn.transaction():
            await aconn.execute("INSERT INTO testapp_item (name, created) VALUES ('async-lost', now())")
            1 / 0
    async with hybridpool.aconnection("asyncapp") as aconn:
        cursor = await aconn.execute("SELECT count(*) FROM testapp_item WHERE name = 'async-lost'")
        assert await cursor.fetchone() == (0,)


@pytest.fixture
def refused():
    """The connection attempts the server refuses: "asyncapp" connects as a role whose CONNECTION
    LIMIT is its max_size, so a pool past the cap, even briefly, is refused and psycopg_pool logs it.
    Only the messages are kept: a log record would keep its exception, and through its traceback
    a connection attempt that a loop's end cancelled, open."""
    messages: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "too many connections" in record.getMessage():
                messages.append(record.getMessage())

    handler = Keep(logging.WARNING)
    logging.getLogger("psycopg.pool").addHandler(handler)
    yield messages
    logging.getLogger("psycopg.pool").removeHandler(handler)


async def test_async_pool_cap_holds_with_10x_more_tasks(refused):
    app = settings.DATABASES["asyncapp"]["OPTIONS"]["application_name"]

    pool = await hybridpool.aget_pool("asyncapp")  # the running loop's
    served = []

    async def task():
        async with hybridpool.aconnection("asyncapp") as aconn:
            served.append(aconn._pool)  # psycopg_pool's mark of the lender, set while lent
            await aconn.execute("SELECT pg_sleep(0.05)")

    with PeakSampler(app) as sampler:
        await asyncio.gather(*(task() for _ in range(10 * ASYNC_MAX_SIZE)))
    assert sampler.peak == ASYNC_MAX_SIZE
    assert refused == []
    assert served == [pool] * (10 * ASYNC_MAX_SIZE)


def test_the_async_pools_of_every_event_loop_share_max_size(refused):
    """asgiref's async_to_sync outside a running loop makes a new loop per call, each with a pool."""
    app = settings.DATABASES["asyncapp"]["OPTIONS"]["application_name"]

    async def request():
        async def task():
            async with hybridpool.aconnection("asyncapp") as aconn:
                await aconn.execute("SELECT pg_sleep(0.05)")

        await asyncio.gather(*(task() for _ in range(ASYNC_MAX_SIZE)))

    with PeakSampler(app) as sampler:
        outcomes = run_concurrently(lambda i: async_to_sync(request)(), 8)
    assert outcomes == [None] * 8
    assert sampler.peak == ASYNC_MAX_SIZE  # not 8 x max_size
    assert refused == []
    assert wait_for(lambda: server_connections(app) == 0)  # each loop's pool closed as its loop ended


def test_loops_that_live_on_hand_their_idle_connections_to_those_that_wait(refused):
    app = settings.DATABASES["asyncapp"]["OPTIONS"]["application_name"]

    async def rounds():
        async def task():
            async with hybridpool.aconnection("asyncapp", timeout=10) as aconn:
                await aconn.execute("SELECT pg_sleep(0.02)")

        for _ in range(5):
            await asyncio.gather(*(task() for _ in range(ASYNC_MAX_SIZE)))
            await asyncio.sleep(0.01)  # the loop lives on, its pool idle

    with PeakSampler(app) as sampler:
        outcomes = run_concurrently(lambda i: asyncio.run(rounds()), 4)
    assert outcomes == [None] * 4
    assert sampler.peak <= ASYNC_MAX_SIZE
    assert refused == []


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # the loop's tasks, never ended
def test_a_loop_closed_without_closing_its_pool_gives_its_connections_back():
    app = settings.DATABASES["asyncapp"]["OPTIONS"]["application_name"]

    async def hold_all():
        held = [await (await hybridpool.aget_pool("asyncapp")).getconn() for _ in range(ASYNC_MAX_SIZE)]
        for conn in held:
            await (await hybridpool.aget_pool("asyncapp")).putconn(conn)

    loop = asyncio.new_event_loop()
    loop.run_until_complete(hold_all())
    loop.close()  # its tasks never cancelled: the pool's guardian never ran
    assert server_connections(app) == ASYNC_MAX_SIZE
    asyncio.run(hold_all())  # another loop gets every unit of the budget: the closed loop's were freed
    assert wait_for(lambda: server_connections(app) == 0)
    del loop
    gc.collect()  # here, not in a later test: asyncio reports the closed loop's pending tasks


@pytest.mark.timing
async def test_async_pool_timeout_names_the_pool():
    pool = await hybridpool.aget_pool("tiny")
    holder = await pool.getconn()
    started = time.monotonic()
    with pytest.raises(hybridpool.PoolTimeout, match=r"0.30 s from pool 'tiny \(async\)': max_size=1, 1 connections in use"):
        async with hybridpool.aconnection("tiny"):
            pass
    assert time.monotonic() - started <= 1.0  # the 0.3 s timeout, plus a margin
    await pool.putconn(holder)


async def test_async_orm_runs_on_the_thread_pool():
    item = await Item.objects.acreate(name="async-orm")
    assert await Item.objects.filter(name="async-orm").acount() == 1
    assert (await Item.objects.filter(pk=item.pk).afirst()).name == "async-orm"
    assert [i.name async for i in Item.objects.filter(name="async-orm")] == ["async-orm"]
    await sync_to_async(connections.close_all)()


async def test_each_event_loop_gets_its_own_pool():
    first = await hybridpool.aget_pool("asyncapp")
    other = await asyncio.to_thread(lambda: asyncio.run(hybridpool.aget_pool("asyncapp")))
    assert other is not first
    assert await hybridpool.aget_pool("asyncapp") is first

