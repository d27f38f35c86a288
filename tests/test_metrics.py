"""The pools' metrics (issue 14): OpenTelemetry's names in their Prometheus form, read from real
pools on the test server, through prometheus_client (one process, and gunicorn's and uvicorn's
workers in its multiprocess mode) and through OpenTelemetry's SDK; and the exhaustion episodes'
log lines, once per episode.

The pools here are real (the test server, ``pg_stat_activity``), the servers real processes on
127.0.0.1 under a bounded load. The in-process tests run on every driver of the pass (the green
driver under ``gevent.monkey``); the servers are started once, in the unpatched pass.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from hybridpool import PoolConfig, PoolTimeout, episodes, stats
from hybridpool.asgi.pool import LoopPool

from .conftest import GEVENT, run_concurrently, server_connections

prometheus_client = pytest.importorskip("prometheus_client")
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

#: The Prometheus names issue 14 asks for, by OpenTelemetry name.
EXPECTED_NAMES = {
    "db.client.connection.count": "db_client_connection_count",
    "db.client.connection.idle.max": "db_client_connection_idle_max",
    "db.client.connection.idle.min": "db_client_connection_idle_min",
    "db.client.connection.max": "db_client_connection_max",
    "db.client.connection.pending_requests": "db_client_connection_pending_requests",
    "db.client.connection.timeouts": "db_client_connection_timeouts_total",
    "db.client.connection.create_time": "db_client_connection_create_time_seconds",
    "db.client.connection.wait_time": "db_client_connection_wait_time_seconds",
    "db.client.connection.use_time": "db_client_connection_use_time_seconds",
}


@pytest.fixture(scope="module")
def exporter() -> Iterator[Any]:
    """``import hybridpool.metrics``: the Prometheus exporter, on the default registry, for this
    module only (the other tests run without an observer)."""
    import hybridpool.metrics
    from hybridpool.metrics import prometheus

    installed = prometheus.install()
    assert hybridpool.metrics.install() is installed  # the import installed it; once
    yield installed
    prometheus.uninstall()
    assert stats.observer is None


@pytest.fixture
def short_episodes() -> Iterator[None]:
    """Episodes of 0.1 s waits, ended by 0.3 s without one; the defaults restored after."""
    stats.set_long_wait(0.1, 0.3)
    yield
    stats.set_long_wait(1.0, 5.0)


def sample(name: str, labels: dict[str, str]) -> float:
    """A sample of the default registry, 0 if absent."""
    return prometheus_client.REGISTRY.get_sample_value(name, labels) or 0.0


def scraped(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Prometheus text as {(sample name, sorted labels): value}."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples: dict[Any, float], name: str, **labels: str) -> float:
    """The sum of the samples of ``name`` whose labels include ``labels``."""
    return sum(v for (found, found_labels), v in samples.items()
               if found == name and set(labels.items()) <= set(found_labels))


# -- names and readings (pure)


def test_prometheus_names_are_otel_s_by_its_compatibility_rules():
    from hybridpool.metrics import names

    assert {i.name: names.prometheus_name(i) for i in names.INSTRUMENTS} == EXPECTED_NAMES
    assert [names.prometheus_label(a) for a in (names.STATE, *names.POOL_ATTRIBUTES)] == [
        "state", "pool_name", "alias", "driver"]
    assert all(i.unit == "s" and i.buckets == tuple(sorted(i.buckets)) for i in names.INSTRUMENTS
               if i.kind == "histogram")


def test_the_docs_map_every_metric_to_hikaricp_s_name():
    from hybridpool.metrics import names

    doc = (ROOT / "docs" / "metrics.md").read_text()
    for instrument in names.INSTRUMENTS:
        assert names.prometheus_name(instrument) in doc and instrument.name in doc
        for hikari in re.findall(r"hikaricp_\w+", instrument.hikaricp):
            assert hikari in doc, hikari


def test_readings_add_up_an_alias_s_async_pools_and_keep_their_shared_sizes():
    from hybridpool.metrics import names
    from hybridpool.metrics.readings import PoolStats, read

    def pool_stats(size, idle, waiting):
        return {"pool_min": 1, "pool_max": 5, "pool_size": size, "pool_available": idle, "requests_waiting": waiting}

    readings = read([PoolStats("default", "default", "async", pool_stats(3, 1, 2)),
                     PoolStats("default", "default", "async", pool_stats(2, 2, 0)),
                     PoolStats("default", "default", "thread", pool_stats(4, 0, 7))])
    got = {(r.instrument.name, dict(r.attributes).get(names.STATE), dict(r.attributes)[names.DRIVER]): r.value
           for r in readings}
    assert got[("db.client.connection.count", "used", "async")] == 2
    assert got[("db.client.connection.count", "idle", "async")] == 3
    assert got[("db.client.connection.pending_requests", None, "async")] == 2
    assert got[("db.client.connection.max", None, "async")] == 5  # shared, not 10
    assert got[("db.client.connection.idle.min", None, "async")] == 1
    assert got[("db.client.connection.count", "used", "thread")] == 4
    assert got[("db.client.connection.pending_requests", None, "thread")] == 7


# -- episodes (sans-I/O)


def test_an_episode_begins_at_the_first_long_wait_and_ends_after_a_quiet_spell_once():
    episode = episodes.Episode(long_wait=1.0, quiet=5.0)
    assert episode.served(10.0, 0.2) is None  # short: nothing
    assert episode.served(12.0, 1.5) == episodes.Began(1.5, "served")
    assert episode.failed(13.0, 2.0, timed_out=True) is None  # counted, not logged
    assert episode.failed(13.5, 0.0, timed_out=False) is None
    assert episode.served(14.0, 3.0) is None
    assert episode.served(15.0, 0.0) is None  # short, but 1 s after the last long one: still open
    assert episode.open
    ended = episode.served(19.0, 0.01)
    assert ended == episodes.Ended(duration=14.0 - 10.5, waited=2, timed_out=1, refused=1, longest=3.0)
    assert not episode.open
    assert episode.served(19.5, 0.0) is None
    assert episode.failed(20.0, 0.0, timed_out=False) == episodes.Began(0.0, "refused")  # the next episode


def test_episode_messages_carry_the_numbers():
    began = episodes.began_message("default", episodes.Began(10.0, "timed out"), in_use=20, max_size=20, waiting=35)
    assert began == ("pool 'default' exhausted: a request timed out after 10.00 s; max_size=20,"
                     " 20 connections in use, 35 callers waiting")
    ended = episodes.ended_message("default", episodes.Ended(12.5, 240, 12, 0, 10.0), 1.0)
    assert ended == ("pool 'default' no longer exhausted after 12.50 s: 240 requests waited 1 s or more,"
                     " 12 timed out, 0 refused; longest wait 10.00 s")


# -- one process, every driver


def hold_and_wait(pool: Any, waiters: int, hold: float) -> list[Any]:
    """Hold all of ``pool``'s ``max_size`` connections for ``hold`` s while ``waiters`` callers
    check out (each gives its connection back at once); return their results."""
    held = [pool.getconn() for _ in range(pool.max_size)]
    releaser = threading.Timer(hold, lambda: [pool.putconn(conn) for conn in held])
    releaser.start()

    def borrow(i: int) -> Any:
        with pool.connection() as conn:
            return conn.execute("SELECT 1").fetchone()[0]

    try:
        return run_concurrently(borrow, waiters)
    finally:
        releaser.join()


def test_events_are_counted_once_each_and_gauges_read_get_stats(exporter, make_pool):
    from hybridpool.metrics import track
    from hybridpool.metrics.pools import driver_of

    pool = make_pool(min_size=1, max_size=2, timeout=0.5, name=f"m-{uuid.uuid4().hex[:8]}")
    track(pool, alias="tracked")
    labels = {"pool_name": pool.name, "alias": "tracked", "driver": driver_of(pool)}
    pool.wait(5)
    before = pool.get_stats()
    results = hold_and_wait(pool, waiters=6, hold=0.8)  # 0.8 s > timeout 0.5 s: all time out
    assert all(isinstance(r, PoolTimeout) for r in results), results
    served = [pool.getconn() for _ in range(2)]
    for conn in served:
        pool.putconn(conn)
    after = pool.get_stats()
    lent = (after["requests_num"] - after.get("requests_errors", 0)) - (
        before.get("requests_num", 0) - before.get("requests_errors", 0))
    assert lent == 2 + 2  # the two held, then the two served: the waiters all timed out
    assert sample("db_client_connection_timeouts_total", labels) == 6
    assert sample("db_client_connection_wait_time_seconds_count", labels) == 4
    assert sample("db_client_connection_use_time_seconds_count", labels) == 4
    # the held connections were lent 0.8 s: in the use_time buckets above 0.5 s only
    assert sample("db_client_connection_use_time_seconds_bucket", {**labels, "le": "0.5"}) == 2
    # gauges: as get_stats() says (read twice around the scrape: nothing moves now)
    now = pool.get_stats()
    text = prometheus_client.generate_latest().decode()
    assert now == pool.get_stats()
    samples = scraped(text)
    # connections opened, whether before track() (alias "") or after
    assert value(samples, "db_client_connection_create_time_seconds_count", pool_name=pool.name) == (
        after["connections_num"] - after.get("connections_errors", 0))
    assert value(samples, "db_client_connection_count", state="idle", **labels) == now["pool_available"]
    assert value(samples, "db_client_connection_count", state="used", **labels) == (
        now["pool_size"] - now["pool_available"])
    assert value(samples, "db_client_connection_max", **labels) == 2
    assert value(samples, "db_client_connection_idle_min", **labels) == 1
    assert value(samples, "db_client_connection_pending_requests", **labels) == 0
    assert server_connections(pool.app) == now["pool_size"]


def test_gauges_agree_with_get_stats_and_the_server_under_load(exporter, make_pool):
    """20 borrowers hammer a pool of 4 while the registry is scraped: each scrape's gauges are the
    pool's stats of that instant (under gevent nothing runs between the two; on threads the
    connection count, which only grows here, is bracketed), and ``pg_stat_activity`` agrees."""
    from hybridpool.metrics import track

    pool = make_pool(min_size=1, max_size=4, timeout=10, name=f"m-{uuid.uuid4().hex[:8]}")
    track(pool, alias="load")
    labels = {"pool_name": pool.name, "alias": "load"}
    stop = threading.Event()

    def borrow(i: int) -> int:
        count = 0
        while not stop.is_set() and count < 20:  # bounded: at most 400 checkouts
            with pool.connection() as conn:
                conn.execute("SELECT pg_sleep(0.005)")
            count += 1
        return count

    checks: list[tuple[float, float, dict[str, int], dict[str, int]]] = []

    def scrape(i: int) -> None:
        while not stop.is_set():
            first = pool.get_stats()
            samples = scraped(prometheus_client.generate_latest().decode())
            last = pool.get_stats()
            used = value(samples, "db_client_connection_count", state="used", **labels)
            idle = value(samples, "db_client_connection_count", state="idle", **labels)
            checks.append((used, idle, first, last))
            time.sleep(0.02)

    scraper = threading.Thread(target=scrape, args=(0,))
    scraper.start()
    try:
        results = run_concurrently(borrow, 20, timeout=60)
    finally:
        stop.set()
        scraper.join(10)
    assert all(isinstance(r, int) for r in results), results
    assert len(checks) >= 3 and any(used > 0 for used, *_ in checks), checks
    for used, idle, first, last in checks:
        assert first["pool_size"] <= used + idle <= last["pool_size"], (used, idle, first, last)
        assert 0 <= used <= 4 and 0 <= idle <= 4
        if GEVENT:  # a scrape is atomic among greenlets: the very same numbers
            assert (used, idle) == (first["pool_size"] - first["pool_available"], first["pool_available"])
    after = pool.get_stats()
    samples = scraped(prometheus_client.generate_latest().decode())
    assert value(samples, "db_client_connection_count", **labels) == after["pool_size"] == server_connections(pool.app)
    assert value(samples, "db_client_connection_count", state="used", **labels) == 0
    assert value(samples, "db_client_connection_wait_time_seconds_count", **labels) == sum(results)


def test_exhaustion_is_logged_once_per_episode_with_the_numbers(make_pool, short_episodes, caplog):
    """Many callers wait and some time out: one WARNING when it begins, one when it ends."""
    pool = make_pool(min_size=1, max_size=2, timeout=0.35, name=f"m-{uuid.uuid4().hex[:8]}")
    pool.wait(5)
    caplog.set_level(logging.WARNING, logger="hybridpool")
    results = hold_and_wait(pool, waiters=8, hold=0.6)  # 0.6 s > timeout: every waiter times out
    assert sum(isinstance(r, PoolTimeout) for r in results) == 8
    time.sleep(0.35)  # the quiet spell
    with pool.connection():
        pass
    lines = [r.getMessage() for r in caplog.records if r.name == "hybridpool" and "exhausted" in r.getMessage()]
    assert len(lines) == 2, lines
    began, ended = lines
    assert re.fullmatch(rf"pool '{pool.name}' exhausted: a request timed out after 0\.35 s; max_size=2,"
                        r" 2 connections in use, \d+ callers waiting", began), began
    assert re.fullmatch(rf"pool '{pool.name}' no longer exhausted after 0\.[3-9]\d s: 0 requests waited 0\.1 s"
                        r" or more, 8 timed out, 0 refused; longest wait 0\.35 s", ended), ended
    # no episode open: short checkouts are reported only to an observer
    assert stats.report_from == (0.0 if stats.observer is not None else 0.1)


def test_the_async_pool_reports_its_events_and_episodes(exporter, conninfo, short_episodes, caplog):
    from hybridpool.metrics import track

    app = f"hp-{uuid.uuid4().hex[:10]}"
    caplog.set_level(logging.WARNING, logger="hybridpool")

    async def scenario() -> tuple[list[Any], dict[str, int], str]:
        pool: LoopPool[Any] = LoopPool(conninfo, kwargs={"application_name": app},
                                       config=PoolConfig.from_mapping({"min_size": 1, "max_size": 1, "timeout": 0.3,
                                                                       "name": app}))
        await pool.open(wait=True)
        track(pool, alias="aio")
        try:
            async def borrow(hold: float) -> None:
                async with pool.connection() as conn:
                    await conn.execute("SELECT 1")
                    await asyncio.sleep(hold)

            results = await asyncio.gather(borrow(0.5), *(borrow(0) for _ in range(3)), return_exceptions=True)
            await asyncio.sleep(0.35)
            await borrow(0)  # ends the episode
            text = prometheus_client.generate_latest().decode()
            return results, pool.get_stats(), text
        finally:
            await pool.close()

    results, final, text = asyncio.run(scenario())
    assert [type(r) for r in results] == [type(None)] + [PoolTimeout] * 3
    samples = scraped(text)
    labels = {"pool_name": app, "alias": "aio", "driver": "async"}
    assert value(samples, "db_client_connection_timeouts_total", **labels) == 3
    assert value(samples, "db_client_connection_wait_time_seconds_count", **labels) == 2
    assert value(samples, "db_client_connection_use_time_seconds_count", **labels) == 2
    assert value(samples, "db_client_connection_count", **labels) == final["pool_size"] == 1
    lines = [r.getMessage() for r in caplog.records if app in r.getMessage() and "exhausted" in r.getMessage()]
    assert len(lines) == 2 and "3 timed out" in lines[1], lines


def test_the_psycopg_pool_private_method_timed_for_create_time_keeps_its_signature():
    import inspect

    from psycopg_pool import AsyncConnectionPool, ConnectionPool

    for pool_class in (ConnectionPool, AsyncConnectionPool):
        assert list(inspect.signature(pool_class._connect).parameters) == ["self", "timeout"]


# -- OpenTelemetry


def test_otel_instruments_read_the_pools_and_record_their_events(make_pool):
    pytest.importorskip("opentelemetry.sdk")
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    from hybridpool.metrics import install, otel, track

    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    assert install("otel", meter_provider=provider) is install("otel", meter_provider=provider)
    try:
        pool = make_pool(min_size=1, max_size=2, timeout=0.3, name=f"m-{uuid.uuid4().hex[:8]}")
        track(pool, alias="otel")
        pool.wait(5)
        results = hold_and_wait(pool, waiters=3, hold=0.5)
        assert all(isinstance(r, PoolTimeout) for r in results)
        with pool.connection() as conn:
            conn.execute("SELECT 1")
        now = pool.get_stats()
        data = reader.get_metrics_data()
    finally:
        otel.uninstall(provider)
        provider.shutdown()
    points: dict[str, list[Any]] = {}
    for resource_metrics in data.resource_metrics:
        for scope_metrics in resource_metrics.scope_metrics:
            assert scope_metrics.scope.name == "hybridpool"
            for metric in scope_metrics.metrics:
                points[metric.name] = [p for p in metric.data.data_points
                                       if p.attributes.get("db.client.connection.pool.name") == pool.name]
                if metric.name.endswith("_time"):
                    assert metric.unit == "s"
    assert set(points) == set(EXPECTED_NAMES)
    by_state = {p.attributes["db.client.connection.state"]: p.value for p in points["db.client.connection.count"]}
    assert by_state == {"idle": now["pool_available"], "used": now["pool_size"] - now["pool_available"]}
    assert points["db.client.connection.count"][0].attributes["hybridpool.alias"] == "otel"
    assert [p.value for p in points["db.client.connection.max"]] == [2]
    assert [p.value for p in points["db.client.connection.timeouts"]] == [3]
    assert [p.count for p in points["db.client.connection.wait_time"]] == [3]  # 2 held + 1
    assert [p.count for p in points["db.client.connection.use_time"]] == [3]
    assert list(points["db.client.connection.wait_time"][0].explicit_bounds)[:3] == [0.0001, 0.0005, 0.001]


def test_import_installs_otel_when_prometheus_client_is_not_installed(conninfo):
    pytest.importorskip("opentelemetry.sdk")
    code = """
import sys
sys.modules["prometheus_client"] = None  # as if not installed
from opentelemetry import metrics
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
reader = InMemoryMetricReader()
metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
import hybridpool.metrics
from hybridpool import PoolTimeout, create_pool
from hybridpool.metrics import fanout, otel, track
assert [type(e) for e in fanout.installed()] == [otel.OpenTelemetryExporter], fanout.installed()
pool = create_pool(sys.argv[1], min_size=1, max_size=1, name="sub")
track(pool)
with pool.connection():
    try:
        pool.getconn(timeout=0.05)
    except PoolTimeout:
        pass
names = {m.name for rm in reader.get_metrics_data().resource_metrics for sm in rm.scope_metrics for m in sm.metrics}
pool.close()
print(" ".join(sorted(names)))
"""
    done = subprocess.run([sys.executable, "-c", code, conninfo], capture_output=True, text=True, timeout=60,
                          cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == sorted(EXPECTED_NAMES), done.stdout


def test_import_without_either_library_says_what_to_install():
    code = """
import sys
sys.modules["prometheus_client"] = None
sys.modules["opentelemetry"] = None
try:
    import hybridpool.metrics
except ImportError as ex:
    print(ex)
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert "pip install 'hybridpool[prometheus]' or 'hybridpool[otel]'" in done.stdout, (done.stdout, done.stderr)


# -- real servers, several workers, prometheus_client's multiprocess mode

SERVERS = {
    "gunicorn": ["{bin}/gunicorn", "-c", "tests/metricsproject/gunicorn.conf.py", "tests.metricsproject.wsgi"],
    "uvicorn": ["{bin}/uvicorn", "tests.metricsproject.asgi:application", "--host", "127.0.0.1", "--port", "{port}",
                "--workers", "2", "--no-access-log", "--lifespan", "on"],
}


@pytest.mark.slow
@pytest.mark.skipif(GEVENT, reason="starts its own servers: run once, in the unpatched pass")
@pytest.mark.parametrize("server", list(SERVERS))
def test_two_workers_metrics_agree_with_pg_stat_activity_and_the_responses_under_load(server, conninfo):
    """Two workers, each a pool of at most 3, 20 clients, 300 requests holding a connection 0.1 s
    with a 0.25 s pool timeout (so some get 503): the scraped ``/metrics`` (every worker's, added
    up) count the connections ``pg_stat_activity`` shows, as many checkouts as 200s, as many
    timeouts as 503s; the workers' ``get_stats()`` say the same."""
    import aiohttp

    from examples.run import free_port, serving

    port = free_port()
    app = f"hp-metrics-{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory(prefix="hp-prom-") as multiproc_dir:
        env = {
            **os.environ,
            "DATABASE_URL": conninfo, "METRICS_APPLICATION_NAME": app, "METRICS_MIN_SIZE": "1",
            "METRICS_MAX_SIZE": "3", "METRICS_TIMEOUT": "0.25", "METRICS_WORKERS": "2",
            "PROMETHEUS_MULTIPROC_DIR": multiproc_dir, "PORT": str(port),
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        }
        command = [part.format(bin=Path(sys.executable).parent, port=port) for part in SERVERS[server]]
        metrics_path = "/metrics" if server == "uvicorn" else "/metrics/"  # the ASGI route, Django's view
        with serving(command, ROOT, env, port) as running:
            result = asyncio.run(_load(running.base_url, metrics_path, app, conninfo, aiohttp))
            final = result["final"]
        log = running.output
    statuses = result["statuses"]
    assert set(statuses) <= {200, 503}, (statuses, log)
    assert statuses.get(200, 0) > 0 and sum(statuses.values()) == 300, statuses
    # the workers' own stats, and the metrics added up over both workers
    assert len(result["pids"]) == 2, result["pids"]
    pool_size = sum(s["pool_size"] for worker in result["pids"].values() for s in worker)
    assert value(final, "db_client_connection_count", alias="default") == pool_size == result["server_after"]
    assert value(final, "db_client_connection_count", alias="default", state="used") == 0
    assert value(final, "db_client_connection_max", alias="default") == 6  # 3 per worker, both alive
    assert value(final, "db_client_connection_timeouts_total", alias="default") == statuses.get(503, 0)
    assert value(final, "db_client_connection_wait_time_seconds_count", alias="default") == statuses[200]
    assert value(final, "db_client_connection_use_time_seconds_count", alias="default") == statuses[200]
    requests_errors = sum(s.get("requests_errors", 0) for worker in result["pids"].values() for s in worker)
    assert requests_errors == statuses.get(503, 0)
    # under load: every scrape that pg_stat_activity brackets counts what the server counts
    bracketed = [(metric, before) for metric, before, after in result["during"] if before == after]
    assert len(bracketed) >= 3, result["during"]
    assert all(metric == server for metric, server in bracketed), result["during"]
    assert any(used > 0 for used in result["used_during"]), result["used_during"]
    if statuses.get(503):
        assert "exhausted" in log, log


async def _load(base_url: str, metrics_path: str, app: str, conninfo: str, aiohttp: Any) -> dict[str, Any]:
    """300 GETs of ``/work/?sleep=0.1`` from 20 clients, ``/metrics`` scraped meanwhile; then
    each worker's ``/stats/`` and a final scrape, once the gauges are refreshed."""
    statuses: dict[int, int] = {}
    during: list[tuple[float, int, int]] = []
    used_during: list[float] = []
    numbers = iter(range(300))
    done = asyncio.Event()

    async def server(conn: psycopg.AsyncConnection[Any]) -> int:
        cursor = await conn.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", [app])
        return (await cursor.fetchone())[0]

    async def client(session: Any) -> None:
        for _ in numbers:
            async with session.get("/work/?sleep=0.1") as response:
                await response.read()
                statuses[response.status] = statuses.get(response.status, 0) + 1

    async def scrape(session: Any) -> dict[Any, float]:
        async with session.get(metrics_path) as response:
            assert response.status == 200
            return scraped(await response.text())

    async def scraper(session: Any, conn: psycopg.AsyncConnection[Any]) -> None:
        await asyncio.sleep(1.5)  # the pools have grown: from here on their sizes stay
        while not done.is_set():
            before = await server(conn)
            samples = await scrape(session)
            during.append((value(samples, "db_client_connection_count", alias="default"), before, await server(conn)))
            used_during.append(value(samples, "db_client_connection_count", alias="default", state="used"))
            await asyncio.sleep(0.3)

    timeout = aiohttp.ClientTimeout(total=30)
    connector = aiohttp.TCPConnector(limit=30, force_close=True)  # new connections: both workers get requests
    async with aiohttp.ClientSession(base_url, timeout=timeout, connector=connector) as session, \
            await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
        watch = asyncio.create_task(scraper(session, conn))
        await asyncio.gather(*(client(session) for _ in range(20)))
        done.set()
        await watch
        pids: dict[int, list[dict[str, int]]] = {}
        for _ in range(200):  # each worker answers some: the kernel spreads the new connections
            async with session.get("/stats/") as response:
                body = await response.json()
            pids[body["pid"]] = body["stats"]
            if len(pids) == 2:
                break
        await asyncio.sleep(1.5)  # > REFRESH_INTERVAL: every worker's gauges read after the load
        final = await scrape(session)
        server_after = await server(conn)
    return {"statuses": statuses, "during": during, "used_during": used_during, "pids": pids, "final": final,
            "server_after": server_after}


def test_an_observer_that_fails_costs_no_checkout_return_or_slot(make_pool, caplog):
    from hybridpool import stats

    class Failing:
        def lent(self, pool: Any, seconds: float) -> None:
            raise RuntimeError("observer broke at checkout")

        used = created = lent

        def timed_out(self, pool: Any) -> None:
            raise RuntimeError("observer broke at timeout")

    pool = make_pool(min_size=1, max_size=1, timeout=0.3)
    pool.wait(5)
    previous = stats.observer
    stats.set_observer(Failing())
    try:
        for _ in range(3):  # each checkout and return reports, and each report fails
            conn = pool.getconn()
            conn.execute("SELECT 1")
            pool.putconn(conn)
    finally:
        stats.set_observer(previous)
    assert "observer broke at checkout" in caplog.text
    after = pool.get_stats()
    assert after["pool_size"] == 1 and after["pool_available"] == 1 and len(pool.leases) == 0  # the slot is idle
