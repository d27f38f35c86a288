"""Faults against the pools themselves, on the fault suite's own server: each test runs for the
driver of this pass (thread plainly, green under gevent's monkey-patching)."""

from __future__ import annotations

import socket
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from hybridpool import create_pool
from tests.conftest import DRIVERS, run_concurrently, server_connections, wait_for

pytestmark = pytest.mark.faults


@pytest.fixture(params=DRIVERS)
def driver(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def pools() -> Iterator[list[Any]]:
    made: list[Any] = []
    yield made
    for pool in made:
        pool.close()


def make(pools: list[Any], conninfo: str, driver: str, **settings: Any) -> Any:
    app = f"hp-faults-{uuid.uuid4().hex[:8]}"
    pool = create_pool(conninfo, kwargs={"application_name": app}, driver=driver, **settings)
    pool.app = app
    pools.append(pool)
    return pool


def test_requests_that_arrive_after_a_database_restart_all_succeed(driver, pools, fault_server, fault_db):
    pool = make(pools, fault_db, driver, min_size=2, max_size=4, timeout=8)
    deadline = time.monotonic() + 6.0

    def borrower(i: int) -> list[tuple[float, float, object]]:
        done = []
        while (started := time.monotonic()) < deadline:
            try:
                with pool.connection() as conn:
                    conn.execute("SELECT pg_sleep(0.01)")
                outcome: object = "ok"
            except Exception as ex:  # recorded: failures are allowed only while the server is down
                outcome = ex
            done.append((started, time.monotonic(), outcome))
        return done

    outage = fault_server.outage(after=1.0, down=1.5)
    outcomes = [outcome for done in run_concurrently(borrower, 10, timeout=30) for outcome in done]
    outage.join()
    before = [outcome for started, ended, outcome in outcomes if ended < outage.stopping]
    after = [outcome for started, ended, outcome in outcomes if started >= outage.up]
    assert before and set(before) == {"ok"}
    assert len(after) >= 20 and set(map(str, after)) == {"ok"}
    assert server_connections(pool.app, fault_db) <= 4


class Refuser:
    """A TCP listener on 127.0.0.1 that accepts each connection attempt and closes it at once,
    recording when (``time.monotonic()``): a server that is up but never lets anyone in."""

    def __init__(self) -> None:
        self.attempts: list[float] = []
        self._sock = socket.create_server(("127.0.0.1", 0))
        self._sock.settimeout(0.1)
        self.port = self._sock.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            self.attempts.append(time.monotonic())
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._sock.close()


@pytest.mark.timing
def test_reconnects_back_off_with_jitter_then_give_up_and_call_reconnect_failed(driver, pools):
    refuser = Refuser()
    failed: list[float] = []
    try:
        conninfo = f"host=127.0.0.1 port={refuser.port} user=postgres sslmode=disable gssencmode=disable"
        make(pools, conninfo, driver, min_size=1, max_size=1, reconnect_timeout=3.5,
             reconnect_failed=lambda pool: failed.append(time.monotonic()))
        assert wait_for(lambda: failed, timeout=8.0)
        time.sleep(1.0)  # and no attempt after giving up
    finally:
        refuser.close()
    first, *retries = refuser.attempts
    gaps = [later - earlier for earlier, later in zip(refuser.attempts, retries)]
    # psycopg_pool's scheme: 1 s +/- 10 %, then doubling, the last one cut at reconnect_timeout.
    assert len(gaps) == 3, gaps
    assert 0.85 <= gaps[0] <= 1.25 and gaps[1] == pytest.approx(2 * gaps[0], abs=0.25), gaps
    assert refuser.attempts[-1] - first == pytest.approx(3.5, abs=0.3), gaps
    assert failed[0] - first == pytest.approx(3.5, abs=0.3)


def test_close_ends_every_connection_with_a_terminate_message(driver, pools, fault_server, fault_db):
    pool = make(pools, fault_db, driver, min_size=3, max_size=4)
    pool.wait(5)
    offset = fault_server.log_offset()
    lent = pool.getconn()
    lent.execute("SELECT 1")
    pool.close()
    pool.putconn(lent)  # returned to a closed pool: closed, properly
    assert wait_for(lambda: server_connections(pool.app, fault_db) == 0)
    assert fault_server.eof_lines(pool.app, offset) == []
