"""gevent cooperation: the green driver never blocks the hub (run under gevent.monkey)."""

from __future__ import annotations

import time

import pytest
from django.conf import settings
from django.db import connection, connections

import hybridpool
from tests.testapp.models import Item

from .conftest import GEVENT, PeakSampler, run_concurrently, server_states, wait_for

pytestmark = pytest.mark.skipif(not GEVENT, reason="needs gevent monkey-patching: python -m gevent.monkey --module pytest")


@pytest.mark.timing
def test_a_ticker_keeps_its_cadence_while_a_query_runs(make_pool):
    import gevent

    pool = make_pool(min_size=1, max_size=1)
    pool.wait(5)
    ticks = []

    def ticker():
        for _ in range(5):
            ticks.append(time.monotonic())
            gevent.sleep(0.1)

    def query():
        with pool.connection() as conn:
            conn.execute("SELECT pg_sleep(0.3)")

    gevent.joinall([gevent.spawn(ticker), gevent.spawn(query)], timeout=5, raise_error=True)
    gaps = [later - earlier for earlier, later in zip(ticks, ticks[1:])]
    assert len(gaps) == 4
    assert all(abs(gap - 0.1) <= 0.05 for gap in gaps), gaps  # a blocked hub would show a 0.3 s gap


def test_the_orm_serves_each_greenlet_its_own_pooled_connection():
    app = settings.DATABASES["default"]["OPTIONS"]["application_name"]
    assert type(hybridpool.get_pool()).__name__ == "GreenPool"

    @hybridpool.close_connection
    def request(i):
        Item.objects.create(name=f"g{i}")
        wrapper_id = id(connections["default"])
        connection.cursor().execute("SELECT pg_sleep(0.02)")
        return wrapper_id

    with PeakSampler(app) as sampler:
        wrappers = run_concurrently(request, 40)
    assert len(set(wrappers)) == 40  # one Django connection per greenlet
    assert 1 <= sampler.peak <= 4
    connections.close_all()


def test_a_greenlet_killed_mid_query_leaves_no_backend_working(make_pool):
    import gevent

    pool = make_pool(min_size=1, max_size=1)

    def sleeper():
        with pool.connection() as conn:
            conn.execute("SELECT pg_sleep(10)")

    greenlet = gevent.spawn(sleeper)
    assert wait_for(lambda: server_states(pool.app) == ["active"])
    greenlet.kill(timeout=5)  # GreenletExit while psycopg waits on the server
    # The query is cancelled, the connection closed and replaced: nothing is left running.
    assert wait_for(lambda: server_states(pool.app) == ["idle"], timeout=3), server_states(pool.app)
    with pool.connection() as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)

