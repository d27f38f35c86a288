"""A real Celery worker running ORM tasks through the hybridpool ENGINE (issue 13, item 2).

Each worker test starts a Redis server of its own (Debian's ``redis-server``, on a free port, in a
temporary directory) as the broker and result backend, and a Celery worker serving
``tests/deployments/celeryproject`` on a database of its own, with the prefork pool (2 children,
the psycopg_pool driver) or ``-P gevent --concurrency 50`` (the green driver). It runs a warm-up
(until every process's pool has opened ``max_size`` connections), then 1,000 tasks (every 10th
runs helper threads, greenlets under gevent, each with a pooled connection of its own), sampling
the server's connections throughout, and checks:

- every task succeeds and sees its own write;
- the server never counts more connections of the worker than ``max_size`` per worker process
  (prefork: children x ``max_size``), and each process's pool never holds more;
- every connection is back in its pool after each task (prefork: at each task's start its
  process's pool has lent nothing; both: between tasks, nothing lent), and none is left idle in a
  transaction;
- no connection is opened after the warm-up: Celery's Django fix-up closes connections around
  every task and, in prefork workers, calls ``close_pool()`` (celery#10554), which must not
  rebuild the pool. Counted twice: by the pools (psycopg_pool's ``connections_num``, per pool
  object) and by the server (the worker's backends, by pid and start time, sampled every 10 ms;
  that the samples missed none is checked against ``pg_stat_database.sessions`` of the worker's
  database once it has stopped);
- a helper that never gives its connection back has it taken back once it has ended;
- the worker's shutdown ends every connection with a terminate message
  (``pg_stat_database.sessions_abandoned`` does not move: hybridpool closes a prefork child's
  pools at Celery's ``worker_process_shutdown``, the child skipping ``atexit``).

A last test checks the rule of the ENGINE's ``close_pool()`` in this process: pools kept while a
worker's task runs, closed otherwise.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Self

import psycopg
import pytest

from examples.run import free_port
from hybridpool import embedded
from tests.conftest import wait_for

pytestmark = [pytest.mark.deployments, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
PROJECT = "tests.deployments.celeryproject"
REDIS = "/usr/bin/redis-server"
TASKS = 1000
WARMUP = 50
HELPERS_EVERY = 10  # every 10th task runs helpers
HELPERS = 3
#: Longest wait for the worker to answer its first task, and for a batch of tasks (s).
START_SECONDS = 60.0
BATCH_SECONDS = 90.0
STOP_SECONDS = 30.0

#: Per pool type: the worker's arguments, its processes that hold a pool, and the pool's settings.
WORKERS: dict[str, dict[str, Any]] = {
    "prefork": {"args": ["-P", "prefork", "--concurrency", "2"], "processes": 2, "min_size": 1, "max_size": 3,
                "driver": "ThreadPool"},
    "gevent": {"args": ["-P", "gevent", "--concurrency", "50"], "processes": 1, "min_size": 1, "max_size": 5,
               "driver": "GreenPool"},
}


@contextmanager
def redis_server() -> Iterator[str]:
    """Run a Redis server of our own on a free port of 127.0.0.1; yield its URL (database 0)."""
    if not os.access(REDIS, os.X_OK):
        pytest.skip(f"{REDIS} is not installed (scripts/install-deployments installs it)")
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="hybridpool-redis-") as directory:
        process = subprocess.Popen(
            [REDIS, "--port", str(port), "--bind", "127.0.0.1", "--dir", directory, "--save", "",
             "--appendonly", "no", "--logfile", str(Path(directory) / "redis.log")],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            import redis

            client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=1)

            def answers() -> bool:
                if process.poll() is not None:
                    raise RuntimeError(f"redis-server exited with status {process.returncode}")
                try:
                    return bool(client.ping())
                except redis.RedisError:
                    return False

            assert wait_for(answers, 10), "redis-server did not answer PING within 10 s"
            client.close()
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)


@contextmanager
def database(server_url: str, kind: str) -> Iterator[str]:
    """A database of the worker's own on the test server, with the project's tables; its conninfo.
    Only the worker and this test's monitor connect to it: ``pg_stat_database`` counts them."""
    name = f"hybridpool_celery_{os.getpid()}_{kind}"
    conninfo = embedded.create_database(server_url, name)
    try:
        with psycopg.connect(conninfo, autocommit=True) as conn:
            conn.execute("CREATE TABLE celery_tick (id bigserial PRIMARY KEY, number integer NOT NULL,"
                         " pid integer NOT NULL)")
            conn.execute("CREATE TABLE celery_counter (id bigserial PRIMARY KEY, value integer NOT NULL)")
            conn.execute("INSERT INTO celery_counter (id, value) VALUES (1, 0)")
        yield conninfo
    finally:
        embedded.drop_database(server_url, name)


class Worker:
    """A Celery worker process of the project, in a session of its own, its output in a file."""

    def __init__(self, kind: str, broker: str, conninfo: str, app: str, log: Path) -> None:
        spec = WORKERS[kind]
        env = {
            **os.environ,
            "DATABASE_URL": conninfo,
            "DJANGO_SETTINGS_MODULE": f"{PROJECT}.settings",
            "CELERYPROJECT_APPLICATION_NAME": app,
            "CELERYPROJECT_MIN_SIZE": str(spec["min_size"]),
            "CELERYPROJECT_MAX_SIZE": str(spec["max_size"]),
            "CELERYPROJECT_TIMEOUT": "10",
            "CELERYPROJECT_BROKER_URL": broker,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        }
        self.log_path = log
        self._log = log.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", PROJECT, "worker", *spec["args"], "--loglevel", "INFO",
             "--hostname", f"{app}@%h", "--without-gossip", "--without-mingle", "--without-heartbeat"],
            cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
            start_new_session=True)

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> int:
        """Warm shutdown (SIGTERM); SIGKILL to its session if it is still running after a while."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(STOP_SECONDS)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)
        self._log.close()
        return self.process.returncode


class Monitor:
    """One connection of the test's to the worker's database, open before the worker starts, and
    a sampler thread (a second connection) recording, every 10 ms, the worker's server connections:
    their peak count, the longest any has been idle in a transaction, and every backend seen
    (``(pid, backend_start)``), in all and since :meth:`mark`."""

    def __init__(self, conninfo: str, app: str) -> None:
        self.app = app
        self.conn = psycopg.connect(conninfo, autocommit=True)
        self._sampler = psycopg.connect(conninfo, autocommit=True)
        self.peak = 0
        self.longest_idle_in_transaction = 0.0
        self.seen: set[tuple[int, Any]] = set()
        self.seen_since_mark: set[tuple[int, Any]] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            rows = self._sampler.execute(
                "SELECT pid, backend_start, CASE WHEN state = 'idle in transaction'"
                " THEN extract(epoch FROM clock_timestamp() - state_change) ELSE 0 END"
                " FROM pg_stat_activity WHERE application_name = %s", [self.app]).fetchall()
            self.peak = max(self.peak, len(rows))
            backends = {(pid, started) for pid, started, _ in rows}
            self.seen |= backends
            self.seen_since_mark |= backends
            self.longest_idle_in_transaction = max([self.longest_idle_in_transaction,
                                                    *(float(idle) for _, _, idle in rows)])
            time.sleep(0.01)

    def backends(self) -> set[tuple[int, Any]]:
        """The worker's backends now."""
        return set(self.conn.execute("SELECT pid, backend_start FROM pg_stat_activity WHERE application_name = %s",
                                     [self.app]).fetchall())

    def mark(self) -> set[tuple[int, Any]]:
        """Start :attr:`seen_since_mark` afresh; return the backends now."""
        self.seen_since_mark = set()
        return self.backends()

    def states(self) -> list[str]:
        rows = self.conn.execute("SELECT state FROM pg_stat_activity WHERE application_name = %s", [self.app])
        return [state for (state,) in rows]

    def sessions(self) -> tuple[int, int]:
        """``pg_stat_database``'s (sessions, sessions_abandoned) of the database, once they have
        held still for a second. Exact once the worker's backends have exited (an exiting backend
        reports its statistics before it ends); a live backend may report its session later."""
        def read() -> tuple[int, int]:
            return self.conn.execute("SELECT sessions, sessions_abandoned FROM pg_stat_database"
                                     " WHERE datname = current_database()").fetchone()

        last = read()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            time.sleep(1.0)
            now = read()
            if now == last:
                break
            last = now
        return last

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._sampler.close()
        self.conn.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def client(broker: str) -> Any:
    """A Celery app of the test's, without Django's fix-up, to send the project's tasks by name."""
    from celery import Celery

    return Celery("celeryproject-client", broker=broker, backend=broker.rsplit("/", 1)[0] + "/1",
                  fixups=[], set_as_current=False)


def run_batch(app: Any, tasks: list[tuple[str, list[Any]]], worker: Worker) -> list[Any]:
    """Send ``tasks`` (name, args) at once and wait for every result; return them in order (a
    failed task's exception in its place)."""
    from celery.result import ResultSet

    results = ResultSet([app.send_task(name, args=args) for name, args in tasks], app=app)
    try:
        return results.join_native(timeout=BATCH_SECONDS, propagate=False)
    except Exception as ex:  # a timeout: say where the worker is
        raise AssertionError(f"{len(tasks)} tasks not done in {BATCH_SECONDS} s ({ex!r});"
                             f" worker output:\n{worker.output()[-4000:]}") from ex


def wait_ready(celery: Any, worker: Worker) -> None:
    """Wait until the worker answers a task (tasks sent earlier wait in the queue)."""
    result = celery.send_task("celeryproject.stats")
    deadline = time.monotonic() + START_SECONDS
    while not result.ready():
        assert worker.process.poll() is None, f"the worker exited ({worker.process.returncode}):\n{worker.output()}"
        assert time.monotonic() < deadline, f"no answer within {START_SECONDS} s:\n{worker.output()[-4000:]}"
        time.sleep(0.1)
    assert isinstance(result.get(timeout=5, propagate=False), dict), result.traceback


def work(first: int, count: int) -> list[tuple[str, list[Any]]]:
    return [("celeryproject.work", [number, HELPERS if number % HELPERS_EVERY == 0 else 0])
            for number in range(first, first + count)]


def connects(warm: list[dict[str, Any]], measured: list[dict[str, Any]]) -> int:
    """The connections the worker's pools opened during ``measured``, from the reports: per
    process, ``connections_num`` grows on the pool object it had after ``warm``; a pool object
    built later (another token) opened all of its ``connections_num``."""
    known: dict[tuple[int, str], int] = defaultdict(int)
    for report in warm:
        key = (report["pid"], report["pool"])
        known[key] = max(known[key], report["connections_num"])
    latest: dict[tuple[int, str], int] = defaultdict(int)
    for report in measured:
        key = (report["pid"], report["pool"])
        latest[key] = max(latest[key], report["connections_num"])
    return sum(num - known.get(key, 0) for key, num in latest.items())


def failures(results: list[Any]) -> list[Any]:
    return [result for result in results if not isinstance(result, dict)]


def warm_up(celery: Any, worker: Worker, max_size: int, processes: int) -> list[dict[str, Any]]:
    """Run :data:`WARMUP` tasks, then make every process hold ``max_size`` connections at once
    until each one's pool has opened all of them (at most 10 rounds); return the reports."""
    warm = run_batch(celery, work(0, WARMUP), worker)
    assert not failures(warm), failures(warm)[:3]
    for _ in range(10):
        batch = run_batch(celery, [("celeryproject.fill", [max_size])] * (2 * processes), worker)
        assert not failures(batch), failures(batch)[:3]
        warm += batch
        grown = {report["pid"] for report in warm if report.get("pool_available") == max_size}
        if len(grown) == processes:
            return warm
    raise AssertionError(f"the pools did not grow to max_size={max_size} in {processes} processes: {warm[-4:]}")


def stats(celery: Any, worker: Worker, processes: int) -> list[dict[str, Any]]:
    """Reports of the pools between tasks: 10 per process (a prefork child takes any of them)."""
    reports = run_batch(celery, [("celeryproject.stats", [])] * (10 * processes), worker)
    assert not failures(reports), failures(reports)[:3]
    return reports


@pytest.mark.parametrize("kind", list(WORKERS))
def test_a_celery_worker_runs_orm_tasks_within_max_size_without_reconnecting(kind, server_url, tmp_path):
    spec = WORKERS[kind]
    max_size, processes = spec["max_size"], spec["processes"]
    bound = processes * max_size
    app_name = f"hp-celery-{kind}-{uuid.uuid4().hex[:8]}"
    started = time.monotonic()
    with redis_server() as broker, database(server_url, kind) as conninfo, Monitor(conninfo, app_name) as monitor:
        sessions_before_worker = monitor.sessions()
        worker = Worker(kind, broker, conninfo, app_name, tmp_path / f"worker-{kind}.log")
        celery = client(broker)
        try:
            wait_ready(celery, worker)
            warm = warm_up(celery, worker, max_size, processes)
            warm_backends = monitor.mark()

            first = WARMUP
            measured_started = time.monotonic()
            measured = run_batch(celery, work(first, TASKS), worker)
            measured_seconds = time.monotonic() - measured_started
            seen_measured = set(monitor.seen_since_mark)
            measured_backends = monitor.backends()

            assert failures(measured) == [], f"{len(failures(measured))} of {TASKS} failed: {failures(measured)[:3]}"
            assert all(report["seen"] == 1 for report in measured)
            pids = {report["pid"] for report in measured}
            assert len(pids) <= processes

            # Nothing opened after the warm-up: each process keeps one pool object across tasks,
            # and the server sees the same backends throughout (pid and start time).
            opened = connects(warm, measured)
            server_opened = len((seen_measured | measured_backends) - warm_backends)
            assert (opened, server_opened) == (0, 0), (
                f"{opened} connections opened by the pools, {server_opened} new backends seen by the server,"
                f" over {TASKS} tasks after the warm-up")
            assert measured_backends == warm_backends
            pools = {report["pool"] for report in measured}
            assert len(pools) == len(pids), f"{len(pools)} pool objects in {len(pids)} processes"

            # Never more than max_size per process: the server's count, and each pool's own.
            assert 0 < monitor.peak <= bound, f"peak {monitor.peak} server connections, bound {bound}"
            assert {report["driver"] for report in measured} == {spec["driver"]}
            assert all(report["pool_size"] <= max_size and report["lent"] <= max_size
                       and report["before"]["pool_size"] <= max_size for report in measured)
            if kind == "prefork":  # one task at a time per child: at each task's start, its pool lends nothing
                assert [report["before"]["lent"] for report in measured] == [0] * TASKS
                assert all(report["before"]["pool_available"] == report["before"]["pool_size"] for report in measured)

            # Between tasks: every connection back in its pool, idle, none in a transaction.
            assert all(report["lent"] == 0 and report["pool_available"] == report["pool_size"]
                       for report in stats(celery, worker, processes))
            assert set(monitor.states()) == {"idle"}, monitor.states()
            assert monitor.longest_idle_in_transaction < 5.0, monitor.longest_idle_in_transaction
            ticks = monitor.conn.execute("SELECT count(*) FROM celery_tick").fetchone()[0]
            counter = monitor.conn.execute("SELECT value FROM celery_counter WHERE id = 1").fetchone()[0]
            assert ticks == counter == first + TASKS

            # A helper that never gives its connection back: the pool takes it back once it ended.
            forgotten = run_batch(celery, [("celeryproject.forgetful", [number]) for number in range(10)], worker)
            assert not failures(forgotten), failures(forgotten)[:3]
            reclaimed_after = [report["reclaimed_after"] for report in forgotten]
            assert None not in reclaimed_after, reclaimed_after
            assert wait_for(lambda: all(report["lent"] == 0 for report in stats(celery, worker, processes))
                            and set(monitor.states()) == {"idle"}, 10), monitor.states()
            assert "takes back a connection that a greenlet or thread took" in worker.output()
            assert monitor.peak <= bound, f"peak {monitor.peak} server connections, bound {bound}"
        finally:
            celery.close()
            status = worker.stop()
        assert status == 0, f"worker exited with {status}:\n{worker.output()[-4000:]}"
        assert wait_for(lambda: monitor.states() == [], 10), monitor.states()
        sessions_after = monitor.sessions()
    # The sampler saw every session the worker opened (pg_stat_database counts them, exactly once
    # they have ended): none opened and closed between two samples escaped the count above.
    worker_sessions = sessions_after[0] - sessions_before_worker[0]
    assert worker_sessions == len(monitor.seen), (worker_sessions, len(monitor.seen))
    # The worker's shutdown ended every connection with a terminate message: none abandoned.
    assert sessions_after[1] == sessions_before_worker[1], (sessions_before_worker, sessions_after)
    print(f"\n{kind}: {TASKS} tasks in {measured_seconds:.1f} s, 0 failed; peak {monitor.peak} server connections"
          f" (bound {bound}); connects per task after the warm-up of {len(warm)} tasks: {opened / TASKS:g} (pools),"
          f" {server_opened / TASKS:g} (server); the worker's sessions in all: {worker_sessions};"
          f" a forgotten connection taken back"
          f" {max(reclaimed_after):.3f} s at most after its borrower ended; {time.monotonic() - started:.1f} s in all")


def test_close_pool_keeps_the_pools_while_a_celery_worker_task_runs_and_closes_them_otherwise():
    """The rule of ``close_pool()`` (the ENGINE's), in this process: during a worker's task (what
    Celery's fix-up sees at ``task_prerun`` and ``task_postrun``) the pools are kept; outside a
    task, and for a task called directly (not by a worker), they are closed as Django means."""
    from celery import Celery
    from celery._state import pop_current_task, push_current_task
    from django.db import connection

    import hybridpool

    app = Celery("close-pool-rule", fixups=[], set_as_current=False)

    @app.task(shared=False)
    def task() -> None: ...

    def during(called_directly: bool) -> bool:
        """Call close_pool() as the fix-up does during ``task``; True if the pool was kept."""
        connection.ensure_connection()
        pool = hybridpool.get_pool()
        push_current_task(task)
        task.push_request(called_directly=called_directly)
        try:
            connection.close()
            connection.close_pool()
        finally:
            task.pop_request()
            pop_current_task()
        return not pool.closed and hybridpool.get_pool() is pool

    assert during(called_directly=False)  # a worker's task: kept
    assert not during(called_directly=True)  # not a worker's: closed
    pool = hybridpool.get_pool()
    connection.close_pool()
    assert pool.closed and hybridpool.get_pool() is not pool
