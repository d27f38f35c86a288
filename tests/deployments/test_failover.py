"""Failover across hosts: ``HOST = "127.0.0.1,127.0.0.1"``, ``PORT = "p1,p2"`` and
``target_session_attrs=read-write`` (libpq's multi-host syntax) in front of a primary and its
streaming standby of the test's own (:mod:`tests.deployments.replication`).

The switch is an operator's: stop the primary (``pg_ctl stop``), wait (a failover manager noticing),
promote the standby (``pg_ctl promote``). Requests keep arriving at a steady rate whatever the
ones before them are doing (each write a transaction, each read through a read-replica router),
and each test checks that:

- every request that arrives once the promoted standby accepts writes succeeds, on the new
  primary; only requests that arrived before fail, each within the pool's ``timeout`` (the one in
  flight when the primary stops fails once the pool has a connection again: Django's ``atomic()``
  takes one to restore autocommit after it closed the broken one);
- no connection to the stopped primary is lent once it has stopped (when the pool lent it: its
  lease's time), and afterwards every connection the pool holds is on the new primary:
  ``max_size`` borrowed at once all say so (``conn.info.port``, ``inet_server_port()``,
  ``pg_is_in_recovery()``), and so do the idle ones;
- the replica alias (``target_session_attrs=prefer-standby``) serves every read, throughout: from
  the standby before the switch, from the promoted node after it, while there is no standby;
- after ``pg_ctl stop -m fast`` (which waits until the standby has received everything), every
  acknowledged write is on the new primary.

The pool finds the promoted node at its next reconnection attempt, and those back off (1 s, then
doubling, until ``reconnect_timeout``): a promotion soon after the stop is found within about a
second, a late one up to the outage's length later, unless ``reconnect_timeout`` is short (after
it, the next caller that waits opens a connection at once). Each driver runs a prompt switch and
a late one (promoted 8 s after the stop): the psycopg_pool driver in this process, with Django's
request signals around each request, with the default ``reconnect_timeout`` (its wait measured,
within a ``timeout`` that covers it); the green driver in a real gunicorn ``-k gevent``
deployment (``tests/deployments/failoverproject``), after ``pg_ctl stop -m immediate`` (a crash:
the standby may miss the last commits, which are counted, not asserted), with a 3 s
``reconnect_timeout`` (its wait bounded). A last test holds a standby-only alias
(``target_session_attrs=standby``) to what libpq does: the attribute is checked when a connection
opens, never again, so a pooled connection follows its server through a promotion unless the
pool's ``check`` asks ``pg_is_in_recovery()``.

The measured times are printed and quoted in docs/deploy/failover.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import threading
import time
import urllib.request
import uuid
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest

from .replication import Cluster, Unavailable

pytestmark = [pytest.mark.deployments, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
PROJECT = Path(__file__).resolve().parent / "failoverproject"
BIN = Path(sys.executable).parent

MAX_SIZE = 4
#: Seconds between two writes arriving, and between two reads.
WRITE_EVERY = 0.05
READ_EVERY = 0.1
#: Load before the switch (s).
WARM_SECONDS = 1.5
#: Longest a request of the gunicorn deployment may take (s).
REQUEST_SECONDS = 30.0
SERVER = "SELECT inet_server_port(), pg_is_in_recovery()"


@dataclass(frozen=True)
class Scenario:
    """A switch: how the primary stops, how long until the standby is promoted, how long the load
    goes on after, and the pools' ``timeout`` and ``reconnect_timeout``.

    :ivar wait_bound: the longest a request arriving after the promotion may wait (s), or None:
        only ``timeout`` bounds it.
    """

    name: str
    mode: str
    detect: float
    after: float
    timeout: float
    reconnect_timeout: float = 300.0
    wait_bound: float | None = None

    def __str__(self) -> str:
        return (f"pg_ctl stop -m {self.mode}, promoted {self.detect} s later, timeout {self.timeout} s,"
                f" reconnect_timeout {self.reconnect_timeout} s")


PROMPT_FAST = Scenario("prompt", "fast", detect=0.5, after=4.0, timeout=10.0)
#: Found at the pool's next attempt: 15 s after the first failure (1 + 2 + 4 + 8, +/- 10 %).
LATE_FAST = Scenario("late", "fast", detect=8.0, after=10.0, timeout=20.0)
PROMPT_IMMEDIATE = Scenario("prompt", "immediate", detect=0.5, after=4.0, timeout=10.0)
#: Attempts 1 s and 2 s apart, then one per caller that waits: found within about 2 s.
LATE_IMMEDIATE_SHORT_RECONNECT = Scenario("late-reconnect3", "immediate", detect=8.0, after=5.0, timeout=10.0,
                                          reconnect_timeout=3.0, wait_bound=4.0)


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    """A primary (node a) and its streaming standby (node b), stopped and removed at the end."""
    try:
        built = Cluster()
    except Unavailable as ex:
        pytest.skip(str(ex))
    if built.note:
        warnings.warn(built.note, stacklevel=1)
    try:
        built.start()
        yield built
    finally:
        built.close()


@dataclass
class Switch:
    """When each step of a failover happened (``time.monotonic()``), and the nodes' ports."""

    old_port: int
    new_port: int
    stopping: float = 0.0  # pg_ctl stop called
    stopped: float = 0.0  # pg_ctl stop returned: the old primary's sessions have all ended
    writable: float = 0.0  # pg_ctl promote returned and a read-write session opened on the new primary

    def line(self) -> str:
        return (f"stop took {self.stopped - self.stopping:.2f} s,"
                f" writable {self.writable - self.stopping:.2f} s after it began")


def fail_over(cluster: Cluster, mode: str, detect: float) -> Switch:
    """Stop the primary (``pg_ctl stop -m mode``), wait ``detect`` seconds, promote the standby;
    return once the promoted node accepts a read-write session."""
    old, new = cluster.primary, cluster.standby
    switch = Switch(old_port=old.port, new_port=new.port)
    switch.stopping = time.monotonic()
    cluster.stop_primary(mode)
    switch.stopped = time.monotonic()
    time.sleep(detect)
    cluster.promote()
    deadline = time.monotonic() + 10.0
    while True:
        try:
            with psycopg.connect(new.conninfo(target_session_attrs="read-write"), connect_timeout=2):
                break
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)
    switch.writable = time.monotonic()
    return switch


@dataclass
class Outcome:
    """One request: a ``write`` or a ``read``, when it started and ended, and what it saw."""

    kind: str
    started: float
    ended: float = 0.0
    ok: bool = False
    port: int | None = None  # inet_server_port() of the server that answered
    in_recovery: bool | None = None
    lent_port: int | None = None  # conn.info.port of the connection lent: the node libpq picked
    lent_at: float | None = None  # when the pool lent it (its lease's time.monotonic(): one clock for every process)
    id: int | None = None  # the written row's
    error: str = ""


def check_switch(outcomes: list[Outcome], switch: Switch, scenario: Scenario) -> dict[str, Any]:
    """Assert what every failover must show; return the measured figures."""
    writes = [o for o in outcomes if o.kind == "write"]
    reads = [o for o in outcomes if o.kind == "read"]
    old, new = switch.old_port, switch.new_port

    before = [o for o in writes if o.ended < switch.stopping]
    assert before and all(o.ok and o.port == old and not o.in_recovery for o in before), before[:3]

    # Every request that arrives once the promoted standby accepts writes succeeds, on it.
    after = [o for o in writes if o.started >= switch.writable]
    assert len(after) >= scenario.after / WRITE_EVERY / 2, f"too few writes after the switch: {len(after)}"
    failed_after = [o for o in after if not o.ok or o.port != new or o.lent_port != new or o.in_recovery]
    assert not failed_after, failed_after[:5]
    longest_wait = max(o.ended - o.started for o in after)
    if scenario.wait_bound is not None:
        assert longest_wait < scenario.wait_bound, f"a write arriving after the promotion took {longest_wait:.2f} s"

    # Failures only in the switch window, each within the pool's timeout.
    failed = [o for o in writes if not o.ok]
    window_end = switch.writable + scenario.timeout + 2.0
    assert all(o.started < switch.writable and o.ended < window_end for o in failed), failed[:5]

    # Nothing written to, nor lent from, the old primary once it has stopped; no standby written to.
    assert all(o.ended < switch.stopped for o in writes if o.ok and o.port == old)
    assert all(o.port in (old, new) and not o.in_recovery for o in writes if o.ok)
    lent_old = [o for o in outcomes if o.lent_port == old and o.lent_at is not None and o.lent_at >= switch.stopped]
    assert not lent_old, lent_old[:5]

    # The replica alias (prefer-standby) serves every read, from the standby, then from the promoted node.
    assert reads and all(o.ok for o in reads), [o for o in reads if not o.ok][:5]
    assert all(o.port == new for o in reads)
    assert all(o.in_recovery for o in reads if o.ended < switch.stopping)
    assert all(not o.in_recovery for o in reads if o.started >= switch.writable)

    recovered = min(o.ended for o in writes if o.ok and o.port == new)
    return {
        "writes": len(writes), "failed": len(failed), "reads": len(reads),
        "first_new_write_after_writable_s": round(recovered - switch.writable, 2),
        "longest_wait_after_writable_s": round(longest_wait, 2),
        "last_failure_after_stop_s": round(max(o.ended for o in failed) - switch.stopping, 2) if failed else None,
        "failures": sorted({f"{o.error[:120]} (arrived {o.started - switch.stopping:.2f} s after the stop began,"
                            f" {lent(o)}failed {o.ended - o.started:.2f} s later)" for o in failed})[:4],
    }


def lent(outcome: Outcome) -> str:
    if outcome.lent_at is None:
        return ""
    return f"lent a connection to port {outcome.lent_port} {outcome.lent_at - outcome.started:.2f} s later, "


def report(capsys: pytest.CaptureFixture[str], title: str, switch: Switch, figures: dict[str, Any]) -> None:
    with capsys.disabled():
        print(f"\n{title}: {switch.line()}; {figures}")


class Arrivals:
    """Start a request every ``every`` seconds, each in a thread of its own, until :meth:`finish`:
    requests keep arriving while earlier ones wait (as a server's clients do)."""

    def __init__(self, request: Callable[[str, int], Outcome], kind: str, every: float) -> None:
        self.request, self.kind, self.every = request, kind, every
        self.outcomes: list[Outcome] = []
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._spawner = threading.Thread(target=self._spawn, name=f"arrivals-{kind}", daemon=True)
        self._spawner.start()

    def _spawn(self) -> None:
        number = 0
        while not self._stop.is_set():
            thread = threading.Thread(target=self._one, args=(number,), daemon=True)
            thread.start()
            self._threads.append(thread)
            number += 1
            self._stop.wait(self.every)

    def _one(self, number: int) -> None:
        self.outcomes.append(self.request(self.kind, number))

    def finish(self, timeout: float) -> list[Outcome]:
        self._stop.set()
        self._spawner.join(5)
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(deadline - time.monotonic(), 0.0))
        assert not any(thread.is_alive() for thread in self._threads), "a request did not finish"
        return self.outcomes


# -- the psycopg_pool driver, in this process


class FailoverRouter:
    """Reads from ``failover_replica``, writes to ``failover``."""

    def db_for_read(self, model: Any, **hints: Any) -> str:
        return "failover_replica"

    def db_for_write(self, model: Any, **hints: Any) -> str:
        return "failover"

    def allow_relation(self, obj1: Any, obj2: Any, **hints: Any) -> bool:
        return True


def multi_host_entry(cluster: Cluster, target_session_attrs: str, scenario: Scenario) -> dict[str, Any]:
    """A ``DATABASES`` entry for both nodes (libpq's multi-host syntax)."""
    host, port = cluster.hosts()
    return {
        "ENGINE": "hybridpool.backends.postgresql",
        "NAME": "postgres", "USER": "postgres", "HOST": host, "PORT": port,
        "CONN_MAX_AGE": 0,
        "OPTIONS": {
            "target_session_attrs": target_session_attrs,
            "connect_timeout": 5,
            "application_name": f"hp-failover-{uuid.uuid4().hex[:8]}",
            "pool": {"driver": "thread", "min_size": 2, "max_size": MAX_SIZE, "timeout": scenario.timeout,
                     "reconnect_timeout": scenario.reconnect_timeout},
        },
    }


@contextlib.contextmanager
def django_aliases(cluster: Cluster, scenario: Scenario) -> Iterator[None]:
    """Add two aliases to the running Django (``tests/conftest.py``'s) on the cluster: ``failover``
    (read-write) and ``failover_replica`` (prefer-standby), with the ``Item`` table; remove them
    and close their pools at the end."""
    from django.db import connections

    from tests.testapp.models import Item

    entries = {"failover": multi_host_entry(cluster, "read-write", scenario),
               "failover_replica": multi_host_entry(cluster, "prefer-standby", scenario)}
    configured = connections.configure_settings({"default": {}, **entries})
    for name in entries:
        connections.settings[name] = configured[name]
    try:
        with connections["failover"].schema_editor() as editor:
            editor.create_model(Item)
        connections["failover"].close()
        cluster.wait_replayed()
        yield
    finally:
        for name in entries:
            try:
                connections[name].close()
                connections[name].close_pool()
            finally:
                with contextlib.suppress(AttributeError):  # a wrapper made in this thread only
                    del connections[name]
                connections.settings.pop(name, None)


def lent_at(wrapper: Any) -> float:
    """When the pool lent the connection of Django's ``wrapper``: its lease's time (as
    ``failoverproject.views.lent_at``)."""
    lease = wrapper.pool.leases._leases.get(id(wrapper.connection))
    return lease.lent_at if lease is not None else time.monotonic()


def django_request(kind: str, number: int) -> Outcome:
    """One request as Django runs it: ``request_started``, a write in a transaction (to
    ``failover``) or a read (the router sends it to ``failover_replica``), ``request_finished``
    (the connections go back to their pools)."""
    from django.core.signals import request_finished, request_started
    from django.db import DatabaseError, connections, transaction

    from tests.testapp.models import Item

    alias = "failover" if kind == "write" else "failover_replica"
    outcome = Outcome(kind, time.monotonic())
    request_started.send(sender=None)
    try:
        wrapper = connections[alias]
        wrapper.ensure_connection()
        outcome.lent_port, outcome.lent_at = wrapper.connection.info.port, lent_at(wrapper)
        if kind == "write":
            with transaction.atomic(using=alias):
                outcome.id = Item.objects.create(name=f"w{number}").pk
                with wrapper.cursor() as cursor:
                    cursor.execute(SERVER)
                    outcome.port, outcome.in_recovery = cursor.fetchone()
        else:
            Item.objects.count()
            with wrapper.cursor() as cursor:
                cursor.execute(SERVER)
                outcome.port, outcome.in_recovery = cursor.fetchone()
        outcome.ok = True
    except DatabaseError as ex:  # recorded: allowed only in the switch window
        outcome.error = f"{type(ex).__name__}: {ex}"
    finally:
        request_finished.send(sender=None)
        outcome.ended = time.monotonic()
    return outcome


@pytest.mark.parametrize("scenario", [PROMPT_FAST, LATE_FAST], ids=lambda scenario: scenario.name)
def test_thread_driver_sends_every_request_to_the_promoted_standby(cluster, scenario, capsys):
    from django.test import override_settings

    import hybridpool

    with django_aliases(cluster, scenario), override_settings(DATABASE_ROUTERS=[f"{__name__}.FailoverRouter"]):
        loads = [Arrivals(django_request, "write", WRITE_EVERY), Arrivals(django_request, "read", READ_EVERY)]
        try:
            time.sleep(WARM_SECONDS)
            switch = fail_over(cluster, scenario.mode, scenario.detect)
            time.sleep(scenario.after)
        finally:
            outcomes = [o for load in loads for o in load.finish(scenario.timeout + 5)]

        figures = check_switch(outcomes, switch, scenario)

        # Every acknowledged write is on the new primary (a fast stop waits for the standby to catch up).
        acknowledged = {o.id for o in outcomes if o.kind == "write" and o.ok}
        with psycopg.connect(cluster.primary.conninfo(), autocommit=True) as conn:
            stored = {row[0] for row in conn.execute("SELECT id FROM testapp_item")}
        assert acknowledged <= stored, f"{len(acknowledged - stored)} acknowledged writes lost"

        # Every connection the pool may hold, borrowed at once, is on the new primary; so is every idle one.
        pool = hybridpool.get_pool("failover")
        idle_before = sorted(conn.info.port for conn in pool._pool)
        held = [pool.getconn() for _ in range(MAX_SIZE)]
        try:
            servers = [(conn.info.port, *conn.execute(SERVER).fetchone()) for conn in held]
        finally:
            for conn in held:
                pool.putconn(conn)
        assert servers == [(switch.new_port, switch.new_port, False)] * MAX_SIZE
        assert all(conn.info.port == switch.new_port for conn in pool._pool)
        assert pool.get_stats()["pool_size"] <= MAX_SIZE
    figures.update(idle_before_sweep=idle_before)
    report(capsys, f"thread driver, {scenario}", switch, figures)


# -- the green driver: gunicorn -k gevent


class HttpArrivals(threading.Thread):
    """HTTP requests to ``/write/`` every :data:`WRITE_EVERY` and ``/read/`` every
    :data:`READ_EVERY` seconds, each a task of one event loop in a thread of its own, until
    :meth:`finish`."""

    def __init__(self, base_url: str) -> None:
        super().__init__(name="failover-http", daemon=True)
        self.base_url = base_url
        self.outcomes: list[Outcome] = []
        self.stopping = threading.Event()
        self.failure: BaseException | None = None
        self.start()

    def run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as ex:  # noqa: BLE001 - reported by finish()
            self.failure = ex

    def finish(self) -> list[Outcome]:
        self.stopping.set()
        self.join(REQUEST_SECONDS + 5)
        assert not self.is_alive(), "the HTTP clients did not finish"
        if self.failure is not None:
            raise self.failure
        return self.outcomes

    async def _main(self) -> None:
        import aiohttp

        async with aiohttp.ClientSession(self.base_url, connector=aiohttp.TCPConnector(limit=0)) as session:
            spawners = [self._spawn(session, "write", WRITE_EVERY), self._spawn(session, "read", READ_EVERY)]
            tasks = [task for spawned in await asyncio.gather(*spawners) for task in spawned]
            await asyncio.gather(*tasks)

    async def _spawn(self, session: Any, kind: str, every: float) -> list[asyncio.Task[None]]:
        tasks = []
        number = 0
        while not self.stopping.is_set():
            tasks.append(asyncio.create_task(self._one(session, kind, number)))
            number += 1
            await asyncio.sleep(every)
        return tasks

    async def _one(self, session: Any, kind: str, number: int) -> None:
        import aiohttp

        outcome = Outcome(kind, time.monotonic())
        body: dict[str, Any] = {}
        try:
            async with session.get(f"/{kind}/?w={number}",
                                   timeout=aiohttp.ClientTimeout(total=REQUEST_SECONDS)) as response:
                if response.content_type == "application/json":
                    body = await response.json()
                outcome.ok = response.status == 200
                outcome.error = "" if outcome.ok else f"{response.status} {body or await response.text()}"
        except (TimeoutError, aiohttp.ClientError) as ex:
            outcome.error = f"{type(ex).__name__}: {ex}"
        outcome.ended = time.monotonic()
        outcome.port, outcome.in_recovery = body.get("port"), body.get("in_recovery")
        outcome.lent_port, outcome.lent_at, outcome.id = body.get("lent_port"), body.get("lent_at"), body.get("id")
        self.outcomes.append(outcome)


@pytest.mark.parametrize("scenario", [PROMPT_IMMEDIATE, LATE_IMMEDIATE_SHORT_RECONNECT],
                         ids=lambda scenario: scenario.name)
def test_green_driver_under_gunicorn_gevent_sends_every_request_to_the_promoted_standby(cluster, scenario, capsys):
    from examples.run import free_port, serving

    from .failoverproject.models import TABLE_SQL

    with psycopg.connect(cluster.primary.conninfo(), autocommit=True) as conn:
        conn.execute(TABLE_SQL)
    cluster.wait_replayed()
    host, ports = cluster.hosts()
    port = free_port()
    env = {
        **os.environ,
        "FAILOVER_HOST": host, "FAILOVER_PORT": ports,
        "FAILOVER_APPLICATION_NAME": f"hp-failover-gevent-{uuid.uuid4().hex[:8]}",
        "FAILOVER_MAX_SIZE": str(MAX_SIZE), "FAILOVER_TIMEOUT": str(scenario.timeout),
        "FAILOVER_RECONNECT_TIMEOUT": str(scenario.reconnect_timeout),
        "PORT": str(port),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    env.pop("DJANGO_SETTINGS_MODULE", None)
    command = [str(BIN / "gunicorn"), "-c", str(PROJECT / "gunicorn.conf.py"), "tests.deployments.failoverproject.wsgi"]

    def get(path: str) -> dict[str, Any]:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=REQUEST_SECONDS) as response:
            return json.loads(response.read())

    with serving(command, ROOT, env, port) as server:
        load = HttpArrivals(server.base_url)
        try:
            time.sleep(WARM_SECONDS)
            switch = fail_over(cluster, scenario.mode, scenario.detect)
            time.sleep(scenario.after)
        finally:
            outcomes = load.finish()
        before_sweep = get("/pool/")
        swept = get("/sweep/")
    assert server.process.returncode is not None

    figures = check_switch(outcomes, switch, scenario)
    assert swept["held"] == [{"lent_port": switch.new_port, "port": switch.new_port, "in_recovery": False}] * MAX_SIZE
    assert all(port == switch.new_port for port in swept["default"]["idle_ports"]), swept
    assert not swept["default"]["lent_ports"] and swept["default"]["stats"]["pool_size"] <= MAX_SIZE, swept
    assert all(port == switch.new_port for port in swept["replica"]["idle_ports"]), swept

    # A crash (-m immediate) may lose the commits the standby had not received: counted, not asserted.
    acknowledged = {o.id for o in outcomes if o.kind == "write" and o.ok}
    with psycopg.connect(cluster.primary.conninfo(), autocommit=True) as conn:
        stored = {row[0] for row in conn.execute("SELECT id FROM failover_write")}
    figures.update(idle_before_sweep=before_sweep["default"]["idle_ports"],
                   acknowledged_writes_lost=len(acknowledged - stored))
    report(capsys, f"green driver (gunicorn -k gevent), {scenario}", switch, figures)


# -- a standby-only alias


def standby_only(conn: psycopg.Connection[Any]) -> None:
    """A pool ``check`` for a standby-only alias: refuse a connection whose server has left
    recovery (promoted since the connection opened); one round trip per checkout."""
    if not conn.execute("SELECT pg_is_in_recovery()").fetchone()[0]:  # type: ignore[index]
        raise psycopg.OperationalError("the server is no longer a standby")


def test_a_standby_only_alias_follows_libpq_s_rules_and_its_check(cluster, capsys):
    """``target_session_attrs=standby`` is checked by libpq when a connection opens: after a
    promotion the pool still lends its connections to the promoted node, now a primary, unless
    its ``check`` refuses them (:func:`standby_only`); with it, the alias has nothing to lend while
    the cluster has no standby, and serves again from the old primary once it rejoins as one."""
    from hybridpool import create_pool

    host, ports = cluster.hosts()
    conninfo = f"host={host} port={ports} user=postgres dbname=postgres target_session_attrs=standby connect_timeout=5"
    settings = {"driver": "thread", "min_size": 1, "max_size": 2, "timeout": 2.0}
    plain = create_pool(conninfo, **settings)
    checked = create_pool(conninfo, check=standby_only, **settings)
    try:
        for pool in (plain, checked):
            with pool.connection() as conn:
                assert conn.execute(SERVER).fetchone() == (cluster.standby.port, True)
        old, new = cluster.primary, cluster.standby
        fail_over(cluster, "fast", 0.5)

        with plain.connection() as conn:  # opened while it was a standby: lent on, on the new primary
            assert conn.execute(SERVER).fetchone() == (new.port, False)
        with pytest.raises(psycopg.OperationalError), checked.connection():  # PoolTimeout: no standby left
            pass

        rejoining = time.monotonic()
        cluster.rejoin()
        rejoined = time.monotonic()
        deadline = rejoined + 20.0
        while True:  # the pool's reconnection attempts back off: 1 s, 2 s, 4 s, ...
            try:
                with checked.connection() as conn:
                    served = conn.execute(SERVER).fetchone()
                break
            except psycopg.OperationalError:
                assert time.monotonic() < deadline, "the checked pool never reached the rejoined standby"
        served_after = time.monotonic() - rejoined
        assert served == (old.port, True)

        plain.drain()  # its connections renewed (as max_lifetime does in time): back on a standby
        with plain.connection() as conn:
            assert conn.execute(SERVER).fetchone() == (old.port, True)
    finally:
        plain.close()
        checked.close()
    with capsys.disabled():
        print(f"\nstandby-only alias: rejoin took {rejoined - rejoining:.2f} s; the checked pool served from"
              f" the rejoined standby {served_after:.2f} s after it")
