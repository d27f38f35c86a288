"""End to end: the example app served by real gunicorn (gevent worker) and uvicorn processes,
500 requests at 100 concurrent on each, server connections counted in ``pg_stat_activity``."""

from __future__ import annotations

import os

import pytest

from examples.run import run_deployment
from hybridpool.embedded import create_database, drop_database

from .conftest import GEVENT

MAX_SIZE = 5

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(GEVENT, reason="starts its own servers: run once, in the unpatched pass"),
]


@pytest.mark.parametrize("kind", ["gevent", "asgi"])
def test_deployment_serves_every_request_within_max_size(kind, server_url):
    dbname = f"hybridpool_e2e_{kind}_{os.getpid()}"
    conninfo = create_database(server_url, dbname)
    try:
        result = run_deployment(kind, conninfo, requests=500, concurrency=100, max_size=MAX_SIZE)
    finally:
        drop_database(server_url, dbname)
    log = result["server_log"]
    assert (result["ok"], result["errors"]) == (500, 0), (result["error_kinds"], log)
    # Each pool of the process stays within max_size (ASGI has two: the ORM's and the loop's).
    assert all(stats["pool_size"] <= MAX_SIZE for stats in result["pool_stats"].values()), result["pool_stats"]
    assert 1 <= result["peak_server_connections"] <= result["bound"] == result["pools"] * MAX_SIZE
    assert result["checked_out_after"] == 0, result["pool_stats"]
    assert result["idle_in_transaction_after"] == 0
    if kind == "asgi":  # the aconnection() view went through the async pool
        assert result["pool_stats"]["async"]["requests_num"] > 0
