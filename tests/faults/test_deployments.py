"""Faults against real deployments: gunicorn ``-k gevent`` (green driver) and uvicorn (thread
driver for the ORM, the loop's pool for ``aconnection()``), each serving ``tests/faults/project``
from the fault suite's own PostgreSQL server, which they stop, restart and read the log of."""

from __future__ import annotations

import signal

import psycopg
import pytest

from tests.conftest import GEVENT, PeakSampler, server_connections, terminate, wait_for

from .conftest import ROLE
from .deploy import KINDS, deployment, get, hammer

pytestmark = [
    pytest.mark.faults,
    pytest.mark.slow,
    pytest.mark.skipif(GEVENT, reason="starts its own servers: run once, in the unpatched pass"),
]

#: What a deployment serves in a load: ORM views, and under ASGI an ``aconnection()`` view too.
PATHS = {"gevent": ["/query/", "/sleep/?s=0.05"], "asgi": ["/query/", "/sleep/?s=0.05", "/araw/"],
         "asgi-django": ["/query/", "/sleep/?s=0.05", "/araw/"]}

#: ``/state/`` of a session nobody changed.
CLEAN = {"current_user": "postgres", "session_user": "postgres", "search_path": '"$user", public',
         "statement_timeout": "0", "advisory_locks": 0, "temp_tables": 0, "listening": 0, "cursors": 0,
         "prepared": 0}


def idle_backends(conninfo: str, application_name: str) -> set[int]:
    """The backend pids of the idle server connections with ``application_name``."""
    with psycopg.connect(conninfo, autocommit=True) as conn:
        rows = conn.execute("SELECT pid FROM pg_stat_activity WHERE application_name = %s AND state = 'idle'",
                            [application_name])
        return {pid for (pid,) in rows}


def statuses(outcomes: list[dict]) -> dict:
    found: dict = {}
    for outcome in outcomes:
        found[outcome["status"]] = found.get(outcome["status"], 0) + 1
    return found


@pytest.mark.timing
@pytest.mark.parametrize("kind", KINDS)
def test_no_request_fails_after_every_pooled_backend_is_terminated(kind, fault_db):
    max_size = 10
    with deployment(kind, fault_db, ROLE, max_size=max_size) as server:
        # Every pooled connection open and used, so that each is found dead by the next checkouts.
        warm = hammer(server, ["/sleep/?s=0.2"], concurrency=3 * max_size, seconds=0.5)
        assert statuses(warm).keys() == {200}
        assert terminate(server.app, fault_db) >= max_size  # the ORM's pool, and the loop's under ASGI
        sequential = [get(server, PATHS[kind][n % len(PATHS[kind])]) for n in range(50)]
        concurrent = []
        while len(concurrent) < 50:
            concurrent += hammer(server, PATHS[kind], concurrency=10, seconds=0.01)
    outcomes = sequential + concurrent
    assert statuses(outcomes) == {200: len(outcomes)}, server.output
    # Each dead connection is replaced inside the checkout that found it: no wait on a backoff.
    assert max(o["seconds"] for o in sequential) < 2.0, [round(o["seconds"], 2) for o in sequential]


@pytest.mark.parametrize("kind", KINDS)
def test_requests_that_arrive_after_a_database_restart_all_succeed(kind, fault_server, fault_db):
    with deployment(kind, fault_db, ROLE, max_size=4, timeout=8) as server:
        outage = fault_server.outage(after=1.0, down=1.5)
        outcomes = hammer(server, PATHS[kind], concurrency=10, seconds=6.0)
        outage.join()
        stats = get(server, "/stats/")["body"]["orm"]
    before = [o for o in outcomes if o["started"] + o["seconds"] < outage.stopping]
    after = [o for o in outcomes if o["started"] >= outage.up]
    assert before and statuses(before) == {200: len(before)}
    assert len(after) >= 20 and statuses(after) == {200: len(after)}, (statuses(after), server.output)
    assert stats.get("connections_lost", 0) + stats.get("connections_errors", 0) >= 1, stats  # the restart was felt


@pytest.mark.timing
@pytest.mark.parametrize("kind", KINDS)
def test_overload_gets_200_or_503_within_the_timeout_and_max_size(kind, fault_db):
    max_size, timeout, hold = 4, 1.0, 0.3
    with deployment(kind, fault_db, ROLE, max_size=max_size, timeout=timeout) as server:
        with PeakSampler(server.app, fault_db) as peak:
            outcomes = hammer(server, [f"/sleep/?s={hold}"], concurrency=20 * max_size, seconds=3.0)
    found = statuses(outcomes)
    assert found.keys() == {200, 503}, (found, server.output)  # both: the pool was exhausted
    assert {o["retry_after"] for o in outcomes if o["status"] == 503} == {"1"}
    assert max(o["seconds"] for o in outcomes) < timeout + hold + 2.0
    assert 1 <= peak.peak <= max_size


@pytest.mark.parametrize("kind", KINDS)
def test_no_session_state_reaches_the_next_request(kind, fault_db):
    with deployment(kind, fault_db, ROLE, max_size=2) as server:
        outcomes = hammer(server, ["/dirty/", "/state/", "/state/"], concurrency=6, seconds=2.0)
    assert statuses(outcomes).keys() == {200}, server.output
    dirtied = {o["body"]["backend"] for o in outcomes if o["path"] == "/dirty/"}
    states = [o["body"] for o in outcomes if o["path"] == "/state/"]
    assert {state.pop("backend") for state in states} & dirtied  # the dirtied sessions were reused
    assert all(state == CLEAN for state in states), [s for s in states if s != CLEAN][:3]


@pytest.mark.parametrize("kind", KINDS)
def test_borrowers_that_end_without_returning_do_not_exhaust_the_pool(kind, fault_db):
    max_size = 4
    with deployment(kind, fault_db, ROLE, max_size=max_size, timeout=5) as server:
        with PeakSampler(server.app, fault_db) as peak:
            strays = hammer(server, ["/stray/"], concurrency=10, seconds=1.0)
            outcomes = hammer(server, ["/query/"], concurrency=10, seconds=1.0)

        def all_back() -> bool:
            stats = get(server, "/stats/")["body"]["orm"]
            return stats["pool_size"] == stats["pool_available"]

        reclaimed = wait_for(all_back, timeout=10.0)
    assert len(strays) >= 50 and statuses(strays) == {200: len(strays)}
    assert statuses(outcomes) == {200: len(outcomes)}, server.output
    assert peak.peak <= max_size
    assert reclaimed


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
@pytest.mark.parametrize(("kind", "workers"), [(kind, 1) for kind in KINDS] + [("asgi-django", 2)])
def test_shutdown_closes_every_connection_with_a_terminate_message(kind, workers, sig, fault_server, fault_db):
    offset = fault_server.log_offset()
    with deployment(kind, fault_db, ROLE, max_size=4, workers=workers) as server:
        assert statuses(hammer(server, PATHS[kind], concurrency=8, seconds=1.0)).keys() == {200}
        assert server_connections(server.app, fault_db) >= 1
        server.process.send_signal(sig)
        server.process.wait(20)
    assert server_connections(server.app, fault_db) == 0, server.output
    assert fault_server.eof_lines(server.app, offset) == [], server.output
    # As without hybridpool: a single uvicorn process ends by the SIGTERM it re-raises; its
    # --workers parent and gunicorn exit with 0.
    ends_by_signal = kind != "gevent" and workers == 1 and sig == signal.SIGTERM
    assert server.process.returncode == (-signal.SIGTERM if ends_by_signal else 0), server.output


def test_preloaded_master_s_connection_is_never_used_nor_closed_by_a_worker(fault_server, fault_db):
    offset = fault_server.log_offset()
    with deployment("gevent", fault_db, ROLE, max_size=4, workers=2, preload=True) as server:
        bodies = []
        while len({body["worker"] for body in bodies}) < 2 and len(bodies) < 2000:
            bodies += [o["body"] for o in hammer(server, ["/query/"], concurrency=10, seconds=0.2)]
        master_backend = bodies[0]["preloaded_backend"]
        assert master_backend is not None
        assert len({body["worker"] for body in bodies}) == 2  # both workers served
        assert master_backend not in {body["backend"] for body in bodies}
        before = server_connections(server.app, fault_db)
        server.process.send_signal(signal.SIGTTOU)  # one worker fewer: a worker exits, closing its pool
        assert wait_for(lambda: server_connections(server.app, fault_db) < before, timeout=10.0)
        # The master's connection, inherited by both workers, is still open and idle.
        assert master_backend in idle_backends(fault_db, server.app), server.read_log()
        server.process.send_signal(signal.SIGTERM)
        server.process.wait(20)
    assert server_connections(server.app, fault_db) == 0, server.output
    assert fault_server.eof_lines(server.app, offset) == [], server.output
