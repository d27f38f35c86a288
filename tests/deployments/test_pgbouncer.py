"""hybridpool behind PgBouncer (issue 13, item 3): Debian's ``pgbouncer``, started by these tests on a
port of its own (:mod:`tests.deployments.pgbouncer`), in transaction mode and in session mode.

- the ORM, ``connection()``, ``aconnection()`` and ``NativeQuerySet``'s reads work through it;
- the reset per mode (``OPTIONS["pool"]["pgbouncer"]``): transaction mode sends no reset, only the
  rollback (there is no session to reset); session mode resets every borrower's session, which
  PgBouncer does not (its ``server_reset_query`` runs when a client disconnects);
- system check ``hybridpool.W005`` names the settings transaction pooling breaks, and the breakage
  is real;
- requests recover from a restart of PgBouncer and of PostgreSQL behind it (a server of the tests'
  own, :class:`tests.faults.server.FaultServer`), and from its server connections being terminated.

PgBouncer's ``[databases]`` entries give the time zone: ``app`` a zone other than Django's (as a
server's default may be: Django must set its own), ``app_tz`` Django's (the advice of docs/deploy/pgbouncer.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import decimal
import os
import signal
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from asgiref.sync import sync_to_async
from django.db import DEFAULT_DB_ALIAS, connections, transaction
from django.db.models import Count, Max, Min, QuerySet

import hybridpool
from hybridpool import PoolConfig, PoolSettingError, embedded, native, registry
from hybridpool.checks import check_server_capacity, check_settings
from hybridpool.native import NativeQuerySet, why_not_native
from tests.conftest import run_concurrently, wait_for
from tests.faults.server import FaultServer, Outage
from tests.test_native import outcome
from tests.testapp.models import Author, Item, Sample

from .pgbouncer import PGBOUNCER, SETTINGS, PgBouncer

pytestmark = [
    pytest.mark.deployments,
    pytest.mark.slow,
    pytest.mark.skipif(PGBOUNCER is None, reason="no pgbouncer: scripts/install-deployments installs Debian's"),
]

MODES = ["transaction", "session"]
#: The zone ``app`` gives new server connections: not Django's TIME_ZONE ("UTC", tests/conftest.py).
OTHER_ZONE = "America/New_York"
#: PgBouncer's server connections per database and user. Transaction mode shares a few between more
#: clients. In session mode a client keeps its server connection as long as it stays connected, and
#: the pools keep theirs open: PgBouncer needs one per pooled connection (the ORM's pool and the event
#: loops' of each process, up to max_size each), else a client waits for a server that never frees.
POOL_SIZES = {"transaction": "3", "session": "10"}


@contextlib.contextmanager
def database_alias(conninfo: str, mode: str | None, **entry: Any) -> Iterator[str]:
    """A DATABASES alias of the hybridpool ENGINE for ``conninfo``, declared behind PgBouncer in
    ``mode``, for the block; ``pool`` in ``entry`` adds pool settings. Its pools are closed after."""
    alias = f"pgb_{uuid.uuid4().hex[:8]}"
    pool = {"min_size": 0, "max_size": 4, "timeout": 5, "pgbouncer": mode, **entry.pop("pool", {})}
    options = {"application_name": f"hp-{alias}", "pool": pool, **entry.pop("OPTIONS", {})}
    if mode == "transaction":
        entry.setdefault("DISABLE_SERVER_SIDE_CURSORS", True)
    settings = embedded.django_settings(conninfo, OPTIONS=options, **entry)
    default = dict(connections.settings[DEFAULT_DB_ALIAS])  # configure_settings wants a default: a copy
    connections.settings[alias] = connections.configure_settings({DEFAULT_DB_ALIAS: default, alias: settings})[alias]
    try:
        yield alias
    finally:
        connections[alias].close()
        registry.close_all(alias)
        with contextlib.suppress(AttributeError):
            del connections[alias]
        del connections.settings[alias]


def request(alias: str, sql: str = "SELECT 1", params: Any = None) -> Any:
    """One request's database work: a statement through Django's connection, given back at the end."""
    try:
        with connections[alias].cursor() as cursor:
            cursor.execute(sql, params)
            return cursor.fetchone()
    finally:
        connections[alias].close()


@pytest.fixture(scope="module")
def database(server_url: str) -> Iterator[str]:
    """A database of this module's own on the test server, with the test app's tables; its name."""
    name = f"hybridpool_pgb_{os.getpid()}"
    conninfo = embedded.create_database(server_url, name)
    try:
        with database_alias(conninfo, None) as alias, connections[alias].schema_editor() as editor:
            for model in (Item, Author, Sample):
                editor.create_model(model)
        yield name
    finally:
        embedded.drop_database(server_url, name)


@pytest.fixture(scope="module")
def bouncers(server_url: str, database: str) -> Iterator[dict[str, PgBouncer]]:
    """One PgBouncer per mode in front of the test server, each serving :func:`database` as ``app``
    (new server connections in :data:`OTHER_ZONE`) and as ``app_tz`` (in Django's)."""
    started: dict[str, PgBouncer] = {}
    try:
        for mode in MODES:
            started[mode] = PgBouncer(server_url, mode, {"app": f"{database} timezone={OTHER_ZONE}",
                                                         "app_tz": f"{database} timezone=UTC"},
                                      default_pool_size=POOL_SIZES[mode])
        yield started
    finally:
        for bouncer in started.values():
            bouncer.close()


@pytest.fixture
def clean_tables(server_url: str, database: str) -> Iterator[None]:
    """Empty the test app's tables of :func:`database` before the test."""
    with psycopg.connect(embedded.with_dbname(server_url, database), autocommit=True) as conn:
        conn.execute("TRUNCATE testapp_sample, testapp_author, testapp_item RESTART IDENTITY CASCADE")
    yield


# -- settings and checks


def test_the_pgbouncer_setting_is_validated_and_decides_the_reset():
    assert PoolConfig().pgbouncer is None
    assert PoolConfig(pgbouncer="transaction").reset == "rollback"  # no session to reset
    assert PoolConfig(pgbouncer="transaction", reset="safe").reset == "rollback"
    assert PoolConfig(pgbouncer="session").reset == "safe"  # PgBouncer resets nothing between borrowers

    def custom(conn: Any) -> None: ...

    assert PoolConfig(pgbouncer="transaction", reset=custom).reset is custom
    with pytest.raises(PoolSettingError) as raised:
        PoolConfig(pgbouncer="statement")
    assert str(raised.value) == ("hybridpool setting 'pgbouncer' = 'statement' (str): must be 'transaction' or"
                                 " 'session' or None (no PgBouncer in front)")
    with pytest.raises(PoolSettingError) as raised:
        PoolConfig.from_django({"pool": {"pgbouncer": True}}, alias="app")
    assert str(raised.value).startswith("DATABASES['app']['OPTIONS']['pool']['pgbouncer'] = True (bool): must be")


def w005(alias: str) -> list[str]:
    return [m.msg for m in check_settings() if m.id == "hybridpool.W005" and m.msg.startswith(f"DATABASES[{alias!r}]")]


def test_the_check_warns_about_settings_transaction_pooling_breaks(conninfo, monkeypatch):
    broken = {"DISABLE_SERVER_SIDE_CURSORS": False,
              "OPTIONS": {"server_side_binding": True, "assume_role": "someone"}}
    with database_alias(conninfo, "transaction") as fine, \
            database_alias(conninfo, "transaction", **broken) as wrong, \
            database_alias(conninfo, "transaction", OPTIONS={"server_side_binding": True,
                                                             "prepare_threshold": None}) as unprepared, \
            database_alias(conninfo, "session", **broken) as session, \
            database_alias(conninfo, "statement") as invalid:
        assert w005(fine) == [] and w005(unprepared) == [] and w005(session) == []
        found = w005(wrong)
        assert [msg.split(":")[0] for msg in found] == [
            f"DATABASES[{wrong!r}]['DISABLE_SERVER_SIDE_CURSORS'] is not True",
            f"DATABASES[{wrong!r}]['OPTIONS']['server_side_binding'] = True with prepare_threshold = 5",
            f"DATABASES[{wrong!r}]['OPTIONS']['assume_role'] = 'someone'",
        ]
        assert all(msg.endswith("(OPTIONS['pool']['pgbouncer'] = 'transaction')") for msg in found)
        errors = [m.msg for m in check_settings() if m.id == "hybridpool.E002" and invalid in m.msg]
        assert len(errors) == 1 and "['pgbouncer'] = 'statement'" in errors[0]
        # W002 compares max_size with PostgreSQL's max_connections: behind PgBouncer, its pool_size
        # bounds the server connections instead, so the check leaves those aliases out.
        monkeypatch.setenv("WEB_CONCURRENCY", "1000")
        assert check_server_capacity(databases=[fine, session]) == []


def test_what_the_check_warns_about_does_break_under_transaction_pooling(bouncers, clean_tables):
    """Two clients of one transaction-mode PgBouncer: while the other holds the server connection the
    first used, the first's next transaction runs on another, where its session state is not."""
    bouncer = bouncers["transaction"]
    with psycopg.connect(bouncer.conninfo("app"), autocommit=True) as other:

        def hold_the_idle_server() -> None:  # PgBouncer lends the most recently used idle server first
            other.execute("BEGIN")
            other.execute("SELECT 1")

        # Prepared statements (server_side_binding without prepare_threshold=None):
        with psycopg.connect(bouncer.conninfo("app"), autocommit=True, prepare_threshold=0) as client:
            client.execute("SELECT %s::int", [1])  # prepared, then executed: on one server connection
            hold_the_idle_server()
            with pytest.raises(psycopg.errors.InvalidSqlStatementName, match="does not exist"):
                client.execute("SELECT %s::int", [2])  # executed by name: on another
            other.execute("ROLLBACK")
        with psycopg.connect(bouncer.conninfo("app"), autocommit=True, prepare_threshold=None) as client:
            client.execute("SELECT %s::int", [1])
            hold_the_idle_server()
            assert client.execute("SELECT %s::int", [2]).fetchone() == (2,)
            other.execute("ROLLBACK")

        # Server-side cursors (DISABLE_SERVER_SIDE_CURSORS off): iterator() fetches in later transactions.
        with database_alias(bouncer.conninfo("app"), "transaction", DISABLE_SERVER_SIDE_CURSORS=False) as alias:
            Item.objects.using(alias).bulk_create(Item(name=f"i{n}") for n in range(4))
            rows = Item.objects.using(alias).iterator(chunk_size=1)
            next(rows)
            hold_the_idle_server()
            with pytest.raises(Exception, match="does not exist"):
                list(rows)
            other.execute("ROLLBACK")
            connections[alias].close()


# -- the ORM, connection(), aconnection() and native reads


@pytest.mark.parametrize("mode", MODES)
def test_the_orm_and_connection_work_behind_pgbouncer(mode, bouncers, clean_tables):
    bouncer = bouncers[mode]
    with database_alias(bouncer.conninfo("app"), mode, pool={"max_size": 6}) as alias:
        items = Item.objects.using(alias)
        items.create(name="first")
        with contextlib.suppress(ZeroDivisionError), transaction.atomic(using=alias):
            items.create(name="rolled back")
            1 / 0  # noqa: B018
        with transaction.atomic(using=alias):
            items.create(name="second")
            assert items.select_for_update().filter(name="first").count() == 1
            with transaction.atomic(using=alias):  # a savepoint
                items.filter(name="second").update(name="2nd")
        assert sorted(items.values_list("name", flat=True)) == ["2nd", "first"]
        items.bulk_create(Item(name=f"bulk{n}") for n in range(10))
        assert len(list(items.iterator(chunk_size=3))) == 12  # client-side in transaction mode
        connections[alias].close()
        with hybridpool.connection(alias) as conn:
            assert items.filter(name="first").exists()
            assert conn.execute("SELECT count(*) FROM testapp_item").fetchone() == (12,)
        assert connections[alias].connection is None

        # Concurrent requests, each a transaction: transaction mode shares PgBouncer's few server
        # connections between more clients; every transaction still runs on one of them.
        def work(i: int) -> int:
            try:
                with transaction.atomic(using=alias):
                    items.create(name=f"worker{i}")
                    time.sleep(0.02)
                    return items.filter(name=f"worker{i}").count()
            finally:
                connections[alias].close()

        assert run_concurrently(work, 24) == [1] * 24
        assert items.filter(name__startswith="worker").count() == 24
        clients = [row for row in bouncer.show("CLIENTS") if row["database"] == "app"]
        assert 1 <= len(clients) <= 6  # max_size
        assert request(alias, "SELECT current_setting('TimeZone')") == ("UTC",)  # Django's, not the server's


@pytest.mark.parametrize("mode", MODES)
def test_aconnection_and_native_reads_work_behind_pgbouncer(mode, bouncers, clean_tables):
    with database_alias(bouncers[mode].conninfo("app_tz"), mode) as alias:
        paris = datetime.timezone(datetime.timedelta(hours=1))
        ada = Author.objects.using(alias).create(name="Ada", born=datetime.date(1815, 12, 10))
        Sample.objects.using(alias).bulk_create([
            Sample(title="alpha", price=decimal.Decimal("1.500"), ratio=0.25, count=3, flag=True, author=ada,
                   at=datetime.datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=paris), day=datetime.date(2026, 1, 2),
                   span=datetime.timedelta(hours=1), key=uuid.uuid4(), data={"k": "v", "n": [1, 2.5, None]}),
            Sample(title="beta", price=decimal.Decimal("-20.125"), count=0,
                   at=datetime.datetime(2025, 6, 1, tzinfo=datetime.UTC), data=[1, "two"]),
        ])
        connections[alias].close()
        samples = Sample.objects.using(alias)
        reads: list[tuple[Callable[[], QuerySet[Any]], str, tuple[Any, ...], dict[str, Any]]] = [
            (lambda: samples.all(), "aget", (), {"title": "alpha"}),
            (lambda: samples.select_related("author"), "aget", (), {"data__k": "v"}),
            (lambda: samples.order_by("-at"), "afirst", (), {}),
            (lambda: samples.values("title", "price", "at", "data", "author__name"), "alast", (), {}),
            (lambda: samples.all(), "alatest", (), {}),
            (lambda: samples.filter(flag=True), "acount", (), {}),
            (lambda: samples.filter(data__n__1=2.5), "aexists", (), {}),
            (lambda: samples.all(), "aaggregate", (Max("price"), Min("at"), Count("author")), {}),
            (lambda: samples.all(), "aget", (), {"title": "nothing"}),  # DoesNotExist, both ways
        ]

        async def run() -> None:
            registry.serving(asyncio.get_running_loop())
            for _ in range(8):  # more than psycopg's prepare_threshold: nothing is prepared
                async with hybridpool.aconnection(alias) as aconn:
                    cursor = await aconn.execute("SELECT count(*), current_setting('TimeZone') FROM testapp_sample")
                    assert await cursor.fetchone() == (2, "UTC")
            for queryset, method, args, kwargs in reads:
                assert why_not_native(queryset()) is None

                def call(cls: type, queryset: Any = queryset, method: str = method, args: Any = args,
                         kwargs: Any = kwargs) -> Any:
                    return getattr(cls, method)(queryset(), *args, **kwargs)

                before = native.stats["native"]
                natively = await outcome(lambda: call(NativeQuerySet))
                assert native.stats["native"] == before + 1  # it ran natively
                thread = await outcome(lambda: call(QuerySet))  # Django's own: sync_to_async
                assert natively == thread, method
            await sync_to_async(lambda: connections[alias].close())()  # the thread path's connection

        asyncio.run(run())


# -- the reset per mode


@pytest.mark.parametrize("mode", MODES)
def test_a_returned_connection_is_rolled_back_and_reset_as_its_mode_needs(mode, bouncers, clean_tables, tmp_path):
    """Transaction mode: the rollback and psycopg's own attributes, nothing sent to reset a session.
    Session mode: the safe reset, sent on return (not carried: see the next test)."""
    with database_alias(bouncers[mode].conninfo("app"), mode, pool={"max_size": 1}) as alias:
        assert connections[alias].pool_config.reset == ("rollback" if mode == "transaction" else "safe")
        pool = hybridpool.get_pool(alias)
        conn = pool.getconn()
        conn.autocommit = False
        conn.read_only = False
        conn.execute("INSERT INTO testapp_item (name, created) VALUES ('left open', now())")
        trace = tmp_path / "libpq-trace"
        with trace.open("w") as out:
            conn.pgconn.trace(out.fileno())
            try:
                pool.putconn(conn)
                again = pool.getconn()
                assert again is conn and again.autocommit and again.read_only is None
                assert again.execute("SELECT count(*) FROM testapp_item").fetchone() == (0,)  # rolled back
                pool.putconn(again)
            finally:
                conn.pgconn.untrace()
        messages = [line.split("\t") for line in trace.read_text().splitlines()]  # time, F/B, length, type, text
        queries = [m[4].strip() for m in messages if len(m) == 5 and m[1] == "F" and m[3] == "Query"]
        select = '"SELECT count(*) FROM testapp_item"'
        if mode == "transaction":
            assert queries == ['"ROLLBACK"', select]
        else:
            assert queries == ['"ROLLBACK"', '"DISCARD ALL"', select, '"DISCARD ALL"']


@pytest.mark.parametrize("mode", MODES)
def test_no_session_state_reaches_the_next_request_in_session_mode_and_the_time_zone_is_django_s(
        mode, bouncers, clean_tables):
    """Session mode: one client connection keeps its server connection from one borrower to the next
    (PgBouncer's server_reset_query runs only when a client disconnects), so the pool's reset is what
    leaves nothing for the next request. Either mode: each request sees Django's time zone, which
    the first statement after the reset cannot set."""
    bouncer = bouncers[mode]
    state = ("SELECT pg_backend_pid(), current_setting('TimeZone'), current_setting('search_path'),"
             " (SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()),"
             " (SELECT count(*) FROM pg_prepared_statements), (SELECT count(*) FROM pg_listening_channels()),"
             " to_regclass('pg_temp.scratch')")
    with database_alias(bouncer.conninfo("app"), mode, pool={"max_size": 1}) as alias:
        pid = request(alias, "SELECT pg_backend_pid()")[0]  # Django sets its time zone at this checkout
        # and finds it set at the next; in session mode, a reset carried by this first statement would
        # set it back to the server's for the statement: the reset is sent on return instead.
        assert request(alias, "SELECT current_setting('TimeZone')") == ("UTC",)
        if mode == "session":
            with connections[alias].cursor() as cursor:
                cursor.execute("SET search_path TO pg_catalog")
                cursor.execute("CREATE TEMP TABLE scratch (x int)")
                cursor.execute("SELECT pg_advisory_lock(42)")
                cursor.execute("PREPARE mine AS SELECT 1")
                cursor.execute("LISTEN somewhere")
            connections[alias].close()
            # The same server connection (PgBouncer reset nothing), and nothing left of the borrower;
            # the time zone is Django's although the reset (RESET ALL) set it back to the server's.
            assert request(alias, state) == (pid, "UTC", '"$user", public', 0, 0, 0, None)
        with connections[alias].cursor() as cursor:
            cursor.execute("SET TIME ZONE 'Asia/Tokyo'")
        connections[alias].close()
        assert request(alias, "SELECT current_setting('TimeZone')") == ("UTC",)  # Django's, set again
        if mode == "transaction":
            # PgBouncer tracks the client's TimeZone and sets it on whichever server connection runs
            # the client's next transaction: here another one, while the first is held elsewhere.
            with psycopg.connect(bouncer.conninfo("app"), autocommit=True) as other:
                other.execute("BEGIN")
                other.execute("SELECT 1")
                with hybridpool.connection(alias) as conn:
                    assert conn.execute("SELECT current_setting('TimeZone')").fetchone() == ("UTC",)
                other.execute("ROLLBACK")


# -- faults: terminated server connections, restarts of PgBouncer and of PostgreSQL


@pytest.mark.parametrize("mode", MODES)
def test_no_request_fails_after_the_server_connections_behind_pgbouncer_are_terminated(
        mode, bouncers, database, server_url):
    bouncer = bouncers[mode]
    with database_alias(bouncer.conninfo("app_tz"), mode) as alias:
        assert run_concurrently(lambda i: request(alias, "SELECT pg_sleep(0.1)"), 8) == [("",)] * 8
        assert bouncer.servers("app_tz") >= 1
        with psycopg.connect(embedded.with_dbname(server_url, database), autocommit=True) as conn:
            ended = conn.execute("SELECT count(pg_terminate_backend(pid, 5000)) FROM pg_stat_activity"
                                 " WHERE datname = %s AND pid <> pg_backend_pid()", [database]).fetchone()[0]
        assert ended >= 1
        assert wait_for(lambda: bouncer.servers("app_tz") == 0)  # PgBouncer has seen them go
        assert [request(alias) for _ in range(20)] == [(1,)] * 20
        assert run_concurrently(lambda i: request(alias, "SELECT pg_sleep(0.01)"), 20) == [("",)] * 20


class _Stoppable:
    """What :class:`tests.faults.server.Outage` stops and starts: PgBouncer, killed (a crash)."""

    def __init__(self, bouncer: PgBouncer) -> None:
        self.bouncer = bouncer

    def stop(self) -> None:
        self.bouncer.stop(signal.SIGKILL)

    def start(self) -> None:
        self.bouncer.start()


@pytest.fixture(scope="module")
def fault_server() -> Iterator[FaultServer]:
    server = FaultServer()
    try:
        yield server
    finally:
        server.close()


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("restarted", ["pgbouncer", "postgresql"])
def test_requests_that_arrive_after_a_restart_all_succeed(mode, restarted, fault_server):
    """As ``tests/faults/test_pools.py``'s test of the direct case: 10 borrowers (ORM requests,
    ``connection()`` blocks, and one event loop's ``aconnection()``) through PgBouncer while
    PgBouncer is killed and started again, or PostgreSQL behind it stopped and started again."""
    name = f"pgb_{os.getpid()}_{mode}_{restarted}"
    fault_server.database(name)
    bouncer = PgBouncer(fault_server.url, mode, {"app": f"{name} timezone=UTC"}, default_pool_size=POOL_SIZES[mode])
    try:
        with database_alias(bouncer.conninfo("app"), mode, pool={"min_size": 2, "max_size": 4, "timeout": 8}) as alias:
            deadline = time.monotonic() + 6.0

            def once(i: int) -> None:
                if i % 2:
                    request(alias, "SELECT pg_sleep(0.01)")
                else:
                    with hybridpool.connection(alias) as conn:
                        conn.execute("SELECT pg_sleep(0.01)")

            async def aborrower() -> list[tuple[float, float, object]]:
                done = []
                while (started := time.monotonic()) < deadline:
                    try:
                        async with hybridpool.aconnection(alias) as aconn:
                            await aconn.execute("SELECT pg_sleep(0.01)")
                        result: object = "ok"
                    except Exception as ex:  # recorded: failures are allowed only during the outage
                        result = ex
                        await asyncio.sleep(0.01)
                    done.append((started, time.monotonic(), result))
                return done

            def borrower(i: int) -> list[tuple[float, float, object]]:
                if i == 0:
                    return asyncio.run(aborrower())
                done = []
                while (started := time.monotonic()) < deadline:
                    try:
                        once(i)
                        result: object = "ok"
                    except Exception as ex:  # recorded: failures are allowed only during the outage
                        result = ex
                    done.append((started, time.monotonic(), result))
                return done

            target = _Stoppable(bouncer) if restarted == "pgbouncer" else fault_server
            outage = Outage(target, after=1.0, down=1.5)  # duck-typed: it calls stop() and start()
            results = run_concurrently(borrower, 10, timeout=40)
            outage.join(30)
            outcomes = [entry for done in results for entry in done]
            # Once PostgreSQL accepts connections again, PgBouncer turns clients away until its next
            # server login, at most server_login_retry after its last failed one (default 15 s!).
            up = outage.up + (float(SETTINGS["server_login_retry"]) + 0.25 if restarted == "postgresql" else 0.0)
            before = [result for started, ended, result in outcomes if ended < outage.stopping]
            after = [result for started, ended, result in outcomes if started >= up]
            assert before and set(before) == {"ok"}
            assert len(after) >= 20 and set(map(str, after)) == {"ok"}, bouncer.log_text()[-3000:]
            asynchronous_after = [result for started, ended, result in results[0] if started >= up]
            assert asynchronous_after and set(map(str, asynchronous_after)) == {"ok"}
    finally:
        bouncer.close()
        fault_server.drop(name)
