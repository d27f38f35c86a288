"""Native async code: ``aconnection()`` and the async ORM (ASGI deployments, never gevent-patched).

The ``aconnection()`` tests use an alias of their own: an async pool shares its alias's
``application_name`` with the alias's ORM pool, and the ORM tests count that name's connections.
"""

from __future__ import annotations

import asyncio
import time

import psycopg
import pytest
from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import connections

import hybridpool
from tests.testapp.models import Item

from .conftest import GEVENT, PeakSampler

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


async def test_async_pool_cap_holds_with_10x_more_tasks():
    app = settings.DATABASES["asyncapp"]["OPTIONS"]["application_name"]

    async def task():
        async with hybridpool.aconnection("asyncapp") as aconn:
            await aconn.execute("SELECT pg_sleep(0.05)")

    with PeakSampler(app) as sampler:
        await asyncio.gather(*(task() for _ in range(30)))
    assert sampler.peak == 3


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

