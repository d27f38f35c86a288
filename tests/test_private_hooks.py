"""The private names of psycopg_pool and psycopg that hybridpool overrides or reads, each checked.

hybridpool's psycopg_pool driver overrides a private method of psycopg_pool and reads some of its
private state, and the safe reset carried on a statement reads a cursor's private results; the
versions tested are pinned in ``pyproject.toml`` (``psycopg``, ``psycopg-pool``: ``<3.4``). If an
upgrade renames or reshapes one of them, these tests fail naming it, rather than a pool quietly
behaving otherwise. Each entry says where hybridpool uses it.
"""

from __future__ import annotations

import inspect
from collections import deque

import psycopg
import psycopg_pool.pool
import psycopg_pool.pool_async
import pytest
from psycopg_pool import AsyncConnectionPool, ConnectionPool
from psycopg_pool.pool_async import StopWorker

from hybridpool import stats
from hybridpool.asgi import ThreadPool

#: psycopg_pool methods hybridpool overrides or calls: name -> parameters (after ``self``).
POOL_METHODS = {
    "_reset_connection": ["conn"],  # ThreadPool overrides it: skipped while the sent reset is under way
    "_putconn": ["conn", "from_getconn"],  # ThreadPool._discard, LoopPool._discard: a connection taken, not lent
    "_check_pool_putconn": ["conn"],  # ThreadPool.putconn: refuse another pool's connection before touching it
    "run_task": ["task"],  # LoopPool.close_now: stop the workers of an ending loop
}
#: hybridpool.stats' keys, which the psycopg_pool driver records into psycopg_pool's counters, by
#: the class attribute psycopg_pool stores each under.
POOL_STATS_KEYS = {f"_{key.upper()}": key for key in (
    stats.POOL_MIN, stats.POOL_MAX, stats.POOL_SIZE, stats.POOL_AVAILABLE, stats.REQUESTS_WAITING,
    stats.REQUESTS_NUM, stats.REQUESTS_QUEUED, stats.REQUESTS_WAIT_MS, stats.REQUESTS_ERRORS, stats.USAGE_MS,
    stats.RETURNS_BAD, stats.CONNECTIONS_NUM, stats.CONNECTIONS_MS, stats.CONNECTIONS_ERRORS, stats.CONNECTIONS_LOST)}


@pytest.mark.parametrize("pool_class", [ConnectionPool, AsyncConnectionPool])
@pytest.mark.parametrize(("name", "parameters"), POOL_METHODS.items())
def test_psycopg_pool_methods_hybridpool_uses_keep_their_signature(pool_class, name, parameters):
    method = getattr(pool_class, name, None)
    assert method is not None, f"psycopg_pool's {pool_class.__name__}.{name} is gone"
    assert list(inspect.signature(method).parameters)[1:] == parameters, f"{pool_class.__name__}.{name} changed"


@pytest.mark.parametrize("pool_class", [ConnectionPool, AsyncConnectionPool])
def test_psycopg_pool_stats_keys_are_hybridpool_s(pool_class):
    assert {name: getattr(pool_class, name, None) for name in POOL_STATS_KEYS} == POOL_STATS_KEYS


def test_psycopg_pool_state_hybridpool_reads_has_its_shape(conninfo):
    """LoopPool._shed_one and close_now read the idle deque, the connection counts, the workers and
    the closed flag; ThreadPool.putconn the stats."""
    pool = ThreadPool(conninfo, open=True)
    try:
        pool.wait(10)
        assert isinstance(pool._pool, deque) and len(pool._pool) == pool.min_size
        assert isinstance(pool._nconns, int) and isinstance(pool._nconns_min, int)
        assert isinstance(pool._workers, list) and pool._workers
        assert pool._closed is False
        assert isinstance(pool._stats, dict)
        assert isinstance(pool._waiting, deque)  # _forget_given_up: a caller that timed out leaves it
        assert hasattr(pool._lock, "__enter__")
    finally:
        pool.close()
    for client_class in (psycopg_pool.pool.WaitingClient, psycopg_pool.pool_async.WaitingClient):
        assert "error" in client_class.__slots__
    assert inspect.isclass(StopWorker)  # LoopPool.close_now sends it to each worker


def test_psycopg_cursor_state_the_carried_reset_reads_has_its_shape(conninfo):
    """hybridpool.cursors: a carried reset's results are skipped with the cursor's
    ``_select_current_result`` over ``_results``; the reset is cut out of ``_query.query``; a
    connection in a pipeline has ``_pipeline`` set."""
    with psycopg.connect(conninfo, autocommit=True, cursor_factory=psycopg.ClientCursor) as conn:
        assert conn._pipeline is None
        cursor = conn.execute("SELECT 1; SELECT 2")
        assert isinstance(cursor._results, list) and len(cursor._results) == 2
        assert list(inspect.signature(cursor._select_current_result).parameters)[:1] == ["i"]
        cursor._select_current_result(1)
        assert cursor.fetchone() == (2,)
        assert isinstance(cursor._query.query, bytes)
        with conn.pipeline():
            assert conn._pipeline is not None
