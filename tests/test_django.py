"""The ENGINE ``hybridpool.backends.postgresql``: Django behaves as with its stock backend, pooled."""

from __future__ import annotations

import datetime
import gc
import threading
import time

import psycopg
import pytest
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import DatabaseError, OperationalError, ProgrammingError, connection, connections, transaction
from django.db.backends.postgresql.base import ServerBindingCursor
from django.test.utils import CaptureQueriesContext

import hybridpool
from hybridpool.leases import reclaim
from tests.testapp.models import Item

from .conftest import ROLE, PeakSampler, run_concurrently, wait_for
from .conftest import _state as conftest_state


@pytest.fixture(autouse=True)
def _return_connections():
    yield
    connections.close_all()


def in_use(alias: str = "default") -> int:
    stats = hybridpool.get_pool(alias).get_stats()
    return stats["pool_size"] - stats["pool_available"]


def backend_pid(alias: str = "default") -> int:
    with connections[alias].cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return cursor.fetchone()[0]


def test_orm_uses_a_pooled_connection_and_close_gives_it_back():
    Item.objects.create(name="a")
    assert Item.objects.filter(name="a").exists()
    conn = connection.connection
    assert conn._pool is hybridpool.get_pool()
    assert in_use() == 1
    connection.close()
    assert connection.connection is None
    assert not conn.closed  # returned, not closed
    assert wait_for(lambda: in_use() == 0)


def test_next_connect_reuses_a_pooled_server_connection():
    backend_pid()
    connection.close()
    assert wait_for(lambda: in_use() == 0)
    opened = hybridpool.get_pool().get_stats().get("connections_num", 0)
    backend_pid()
    connection.close()
    assert hybridpool.get_pool().get_stats().get("connections_num", 0) == opened  # nothing new opened


def test_atomic_commits_and_rolls_back():
    with transaction.atomic():
        Item.objects.create(name="kept")
    with pytest.raises(ZeroDivisionError), transaction.atomic():
        Item.objects.create(name="dropped")
        1 / 0
    assert Item.objects.filter(name="kept").exists()
    assert not Item.objects.filter(name="dropped").exists()


def test_close_inside_atomic_gives_back_a_connection_that_is_rolled_back():
    with pytest.raises(ProgrammingError, match="Cannot open a new connection in an atomic block"), transaction.atomic():
        Item.objects.create(name="in-flight")
        connection.close()
        Item.objects.count()  # Django refuses: the connection was closed in the transaction
    assert wait_for(lambda: in_use() == 0)
    assert not Item.objects.filter(name="in-flight").exists()


def test_isolation_level_option_applies_and_does_not_outlive_the_checkout():
    with transaction.atomic(using="serializable"), connections["serializable"].cursor() as cursor:
        cursor.execute("SHOW transaction_isolation")
        assert cursor.fetchone() == ("serializable",)
    connections["serializable"].close()
    with hybridpool.get_pool("serializable").connection() as conn:
        assert conn.isolation_level is None


def test_assume_role_applies_and_is_reset_on_return():
    with connections["role"].cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid(), current_user")
        pid, user = cursor.fetchone()
    assert user == ROLE
    connections["role"].close()
    assert wait_for(lambda: in_use("role") == 0)  # psycopg_pool resets in a worker thread
    pool = hybridpool.get_pool("role")
    pooled = [pool.getconn() for _ in range(pool.get_stats()["pool_size"])]  # every connection it has
    try:
        sessions = {conn.execute("SELECT pg_backend_pid(), current_user").fetchone() for conn in pooled}
    finally:
        for conn in pooled:
            pool.putconn(conn)
    assert (pid, settings.DATABASES["role"]["USER"]) in sessions
    assert all(user != ROLE for _, user in sessions)


def test_server_side_binding_option_selects_django_s_cursor_class():
    with connections["ssb"].cursor() as cursor:
        assert type(cursor.cursor) is ServerBindingCursor
        cursor.execute("SELECT %s::int + 1", [1])
        assert cursor.fetchone() == (2,)


def test_time_zone_is_utc_and_datetimes_are_aware():
    item = Item.objects.create(name="tz")
    item.refresh_from_db()
    assert item.created.tzinfo is not None and item.created.utcoffset() == datetime.timedelta(0)
    with connection.cursor() as cursor:
        cursor.execute("SHOW TimeZone")
        assert cursor.fetchone() == ("UTC",)


def test_django_s_time_zone_is_the_session_default_so_no_checkout_sets_it():
    connection.ensure_connection()
    connection.close()
    assert wait_for(lambda: in_use() == 0)
    with hybridpool.get_pool().connection() as conn:  # returned and reset (RESET ALL) at least once
        assert conn.info.parameter_status("TimeZone") == "UTC"
        assert conn.execute("SELECT reset_val FROM pg_settings WHERE name = 'TimeZone'").fetchone() == ("UTC",)


def test_pool_timeout_reaches_django_as_operational_error():
    errors = []
    with hybridpool.connection("tiny"):
        worker = threading.Thread(target=lambda: errors.extend(_connect_error("tiny")))
        worker.start()
        worker.join(5)
    assert len(errors) == 1 and isinstance(errors[0], OperationalError)
    assert "couldn't get a connection after 0.30 s from pool 'tiny'" in str(errors[0])
    assert isinstance(errors[0].__cause__, hybridpool.PoolTimeout)


def _connect_error(alias: str) -> list[Exception]:
    try:
        connections[alias].ensure_connection()
    except Exception as ex:
        return [ex]
    finally:
        connections[alias].close()
    return []


def test_concurrent_orm_workers_share_max_size_connections():
    app = settings.DATABASES["default"]["OPTIONS"]["application_name"]

    @hybridpool.close_connection
    def request(i):
        with transaction.atomic():
            Item.objects.create(name=f"w{i}")
            return Item.objects.filter(name=f"w{i}").count()

    with PeakSampler(app) as sampler:
        results = run_concurrently(request, 40)
    assert results == [1] * 40
    assert 1 <= sampler.peak <= 4
    assert wait_for(lambda: in_use() == 0)


# -- hybridpool.connection(): scripts, greenlets and tasks


def test_connection_block_binds_the_orm_and_returns_the_connection():
    with hybridpool.connection() as conn:
        assert isinstance(conn, psycopg.Connection)
        assert connection.connection is conn
        Item.objects.create(name="block")
        assert conn.execute("SELECT count(*) FROM testapp_item WHERE name = 'block'").fetchone() == (1,)
    assert connection.connection is None
    assert wait_for(lambda: in_use() == 0)


def test_nested_blocks_reuse_the_outer_connection():
    with hybridpool.connection() as outer:
        with hybridpool.connection() as inner:
            assert inner is outer
        assert connection.connection is outer
    assert connection.connection is None


def test_connection_block_returns_the_connection_on_exception():
    with pytest.raises(RuntimeError), hybridpool.connection() as conn:
        conn.autocommit = False
        conn.execute("INSERT INTO testapp_item (name, created) VALUES ('lost', now())")
        raise RuntimeError("boom")
    assert connection.connection is None
    assert wait_for(lambda: in_use() == 0)
    assert not Item.objects.filter(name="lost").exists()


def test_connection_as_decorator():
    @hybridpool.connection()
    def task():
        held = connection.connection  # lent by the pool for the whole call, before any query
        assert held is not None and held._pool is hybridpool.get_pool()
        Item.objects.create(name="decorated")
        assert connection.connection is held and in_use() == 1
        return Item.objects.filter(name="decorated").count()

    assert task() == 1
    assert task() == 2
    assert connection.connection is None
    assert wait_for(lambda: in_use() == 0)


def test_close_connection_decorator_returns_what_the_function_took():
    @hybridpool.close_connection
    def task():
        return Item.objects.count()

    task()
    assert connection.connection is None
    assert wait_for(lambda: in_use() == 0)


def test_connection_refuses_an_alias_without_the_hybridpool_engine():
    with pytest.raises(ImproperlyConfigured, match=r"DATABASES\['stock'\]\['ENGINE'\]"), hybridpool.connection("stock"):
        pass


@pytest.mark.timing
def test_orm_workers_that_never_give_back_their_connection_do_not_exhaust_the_pool():
    def stray(i):  # the ORM outside any request; the connection is never closed
        return Item.objects.filter(name=f"stray-{i}").count()

    started = time.monotonic()
    assert run_concurrently(stray, 50) == [0] * 50  # max_size=4, timeout=5: served as borrowers end
    assert time.monotonic() - started < 5
    assert wait_for(lambda: in_use() == 0)


def test_pool_false_gives_django_s_own_unpooled_connection():
    wrapper = connections["default"].copy()
    wrapper.settings_dict = {**wrapper.settings_dict, "OPTIONS": {**wrapper.settings_dict["OPTIONS"], "pool": False}}
    wrapper.ensure_connection()
    conn = wrapper.connection
    assert wrapper.pool is None and getattr(conn, "_pool", None) is None
    wrapper.close()
    assert conn.closed  # closed for real, as with Django's stock backend


def test_connection_pool_is_hybridpool_s_and_close_pool_builds_a_new_one():
    pool = connection.pool
    assert pool is hybridpool.get_pool()
    connection.close_pool()
    assert pool.closed
    assert connection.pool is not pool and connection.pool is hybridpool.get_pool()


def assert_kept_after_its_opener_ended(wrapper) -> None:
    """The connection of ``wrapper``, opened by a thread that has ended, is not taken back: the
    reclaim that the thread's end and every maintenance pass run finds nothing to take, and the
    connection is still the wrapper's, in use, working."""
    conn = wrapper.connection
    pool = hybridpool.get_pool()
    assert reclaim(pool, pool.leases) == 0
    assert wrapper.connection is conn and len(pool.leases) == 1  # still lent, to the wrapper
    with wrapper.cursor() as cursor:
        cursor.execute("SELECT 1")


def test_a_shared_connection_opened_by_another_thread_stays_with_its_owner():
    wrapper = connections["default"]  # this thread's, shared with another (Django's #17258)
    wrapper.close()
    wrapper.inc_thread_sharing()
    try:
        opener = threading.Thread(target=wrapper.ensure_connection)
        opener.start()
        opener.join(5)
        assert_kept_after_its_opener_ended(wrapper)  # its owner, this thread, is alive
    finally:
        wrapper.dec_thread_sharing()
        wrapper.close()


@pytest.mark.parametrize("shared_first", [True, False], ids=["shared-then-opened", "opened-then-shared"])
def test_a_shared_connection_outlives_the_thread_that_made_it(shared_first):
    made = {}

    def runner():  # as Django's ThreadTests: a wrapper of this thread, shared, used here, closed by another
        wrapper = connections["default"]
        if shared_first:
            wrapper.inc_thread_sharing()
        wrapper.ensure_connection()
        if not shared_first:  # the wrapper, not this thread, borrows it from now on
            wrapper.inc_thread_sharing()
        made["wrapper"] = wrapper

    thread = threading.Thread(target=runner)
    thread.start()
    thread.join(5)
    wrapper = made["wrapper"]
    try:
        assert_kept_after_its_opener_ended(wrapper)  # the shared wrapper holds it
    finally:
        wrapper.close()
        wrapper.dec_thread_sharing()
    assert len(hybridpool.get_pool().leases) == 0  # given back


def test_a_wrapper_dropped_in_a_transaction_gives_its_connection_back_rolled_back():
    item = Item.objects.create(name="locked")
    connection.close()
    dropped = connections.create_connection("default")  # a wrapper that code forgets, never closed
    dropped.set_autocommit(False)
    with dropped.cursor() as cursor:
        cursor.execute("UPDATE testapp_item SET name = 'changed' WHERE id = %s", [item.pk])  # a row lock
    assert in_use() == 1
    del dropped, cursor
    gc.collect()  # a wrapper is a reference cycle: collected by the cycle collector
    # Taken back at the next maintenance pass, rolled back: the lock is gone, the update undone.
    assert wait_for(lambda: in_use() == 0, timeout=5)
    with transaction.atomic():
        Item.objects.select_for_update(nowait=True).filter(pk=item.pk).update(name="free")
    assert Item.objects.get(pk=item.pk).name == "free"


# -- the safe reset, carried by the next request's first statement (hybridpool.cursors)

#: Session state a borrower can leave behind (LISTEN apart: see its own test).
DIRTY = [
    "SELECT nextval(pg_get_serial_sequence('testapp_item', 'id'))", "SET statement_timeout = '4321s'",
    "SELECT pg_advisory_lock(4242)", "CREATE TEMP TABLE leftover (id int)", "BEGIN",
    "DECLARE leftover CURSOR WITH HOLD FOR SELECT 1", "COMMIT", "PREPARE leftover AS SELECT 1",
    "SET search_path TO pg_catalog",
]
STATE = """
SELECT current_setting('statement_timeout'), current_setting('search_path'),
       (SELECT count(*) FROM pg_locks WHERE pid = pg_backend_pid() AND locktype = 'advisory'),
       (SELECT count(*) FROM pg_class WHERE relpersistence = 't' AND relnamespace = pg_my_temp_schema()),
       (SELECT count(*) FROM pg_cursors), (SELECT count(*) FROM pg_prepared_statements),
       (SELECT count(*) FROM pg_listening_channels()), pg_backend_pid()
"""
CLEAN = ("0", '"$user", public', 0, 0, 0, 0, 0)


def leave_dirty(alias: str, statements: list[str] = DIRTY) -> int:
    """A request that leaves session state behind; returns its backend's pid."""
    with connections[alias].cursor() as cursor:
        for statement in statements:
            cursor.execute(statement)
        cursor.execute("SELECT pg_backend_pid()")
        (pid,) = cursor.fetchone()
    connections[alias].close()
    return pid


def last_query(pid: int) -> str:
    """The last statement the server received from backend ``pid``, as ``pg_stat_activity`` shows it."""
    with psycopg.connect(conftest_conninfo(), autocommit=True) as admin:
        return admin.execute("SELECT query FROM pg_stat_activity WHERE pid = %s", [pid]).fetchone()[0]


def conftest_conninfo() -> str:
    return conftest_state["conninfo"]


def read_state(alias: str) -> tuple:
    with connections[alias].cursor() as cursor:
        cursor.execute(STATE)
        row = cursor.fetchone()
    connections[alias].close()
    return row


def test_the_safe_reset_rides_on_the_next_request_s_first_statement():
    pid = leave_dirty("tiny")
    with connections["tiny"].cursor() as cursor:
        cursor.execute(STATE)  # its first statement: the reset runs before it, in one message
        *state, backend = cursor.fetchone()
        sent = last_query(pid)
    connections["tiny"].close()
    assert backend == pid and tuple(state) == CLEAN
    assert sent.startswith("CLOSE ALL; SET SESSION AUTHORIZATION DEFAULT; RESET ALL;") and sent.endswith(STATE)


@pytest.mark.parametrize("first", ["SELECT 1 / 0", "SELEC 1", "VACUUM testapp_item", "SET ROLE NONE"],
                         ids=["error", "syntax-error", "vacuum", "set"])
def test_a_first_statement_that_fails_or_cannot_carry_the_reset_still_finds_the_session_clean(first):
    pid = leave_dirty("tiny")
    with connections["tiny"].cursor() as cursor:
        try:
            cursor.execute(first)
        except DatabaseError:
            pass
        cursor.execute(STATE)
        *state, backend = cursor.fetchone()
    connections["tiny"].close()
    assert backend == pid and tuple(state) == CLEAN


def test_a_transaction_s_first_statement_carries_the_reset_which_holds_once_committed():
    pid = leave_dirty("tiny")
    with transaction.atomic(using="tiny"), connections["tiny"].cursor() as cursor:
        cursor.execute(STATE)  # after psycopg's BEGIN: the reset and the statement, one message
        *state, backend = cursor.fetchone()
        carried = last_query(pid)
    with connections["tiny"].cursor() as cursor:
        cursor.execute("SELECT 1")
        after_commit = last_query(pid)
    connections["tiny"].close()
    assert backend == pid and tuple(state) == CLEAN
    assert carried.startswith("CLOSE ALL;") and carried.endswith(STATE)
    assert after_commit == "SELECT 1"  # committed: not carried again


class Abort(Exception):
    pass


@pytest.mark.parametrize("end", ["exception", "failed-statement", "rollback-sql"])
def test_a_transaction_that_carried_the_reset_and_rolled_back_leaves_it_pending(end):
    pid = leave_dirty("tiny")
    tiny = connections["tiny"]
    try:
        with transaction.atomic(using="tiny"), tiny.cursor() as cursor:
            if end == "failed-statement":
                cursor.execute("SELECT 1 / 0")  # carries the reset, fails: both taken back
            cursor.execute("SELECT 1")
            if end == "rollback-sql":
                cursor.execute("ROLLBACK")  # out of Django's sight
                transaction.set_rollback(True, using="tiny")
            raise Abort
    except (Abort, DatabaseError):
        pass
    *state, backend = read_state("tiny")  # the same request: the reset, taken back, is carried again
    assert backend == pid and tuple(state) == CLEAN


def test_raw_psycopg_use_of_a_lent_connection_finds_the_session_clean():
    pid = leave_dirty("tiny")
    with hybridpool.connection("tiny") as conn:
        with conn.transaction():  # psycopg's own transaction: BEGIN first
            *state, backend = conn.execute(STATE).fetchone()
        with conn.transaction(), conn.cursor(name="named") as named:  # a server-side cursor
            named.execute("SELECT 1")
            assert named.fetchone() == (1,)
    assert backend == pid and tuple(state) == CLEAN


def test_a_borrower_that_listened_has_its_reset_sent_on_return():
    pid = leave_dirty("tiny", ["LISTEN leftover", "NOTIFY leftover"])
    *state, backend = read_state("tiny")
    assert backend == pid and tuple(state) == CLEAN  # no channel left, even in the first statement
    assert not last_query(pid).startswith("CLOSE ALL")  # sent on its own: UNLISTEN must be done first


def test_a_carried_reset_is_not_in_the_statement_django_records():
    leave_dirty("tiny")
    with CaptureQueriesContext(connections["tiny"]) as captured, connections["tiny"].cursor() as cursor:
        cursor.execute("SELECT %s::int", [7])  # carries the reset
    connections["tiny"].close()
    assert [query["sql"] for query in captured.captured_queries] == ["SELECT 7::int"]
