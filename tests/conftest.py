"""Test set-up: a real PostgreSQL (``DATABASE_URL`` or a throwaway embedded one), a fresh database,
Django configured with the hybridpool ENGINE, and helpers shared by every driver's tests.

The suite runs twice (see README): plainly, for the psycopg_pool driver, and under
``python -m gevent.monkey --module pytest``, for the green driver and the psycopg_pool driver
under gevent's patching (``driver="thread"`` in a gevent worker is a supported set-up).
``DRIVERS`` is what the running process can test; driver-agnostic test bodies are parametrized over it.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest

from hybridpool import PoolConfig, close_all, create_pool, embedded
from hybridpool.migration import PEER_KEYS
from hybridpool.factory import pool_class
from hybridpool.runtime import driver_for, gevent_active
from tests import gis  # PostGIS tests (tests/test_postgis.py)

GEVENT = gevent_active()
DRIVERS = ["gevent", "thread"] if GEVENT else ["thread"]  # the psycopg_pool driver under gevent too: a supported set-up
ROLE = f"hybridpool_test_role_{os.getpid()}"
#: The login role of the "asyncapp" alias: its server-side CONNECTION LIMIT is the alias's max_size,
#: so that its async pools, whatever the event loops, can never pass it unnoticed.
ASYNC_ROLE = f"hybridpool_test_async_{os.getpid()}"
ASYNC_MAX_SIZE = 3

_stack = contextlib.ExitStack()
_state: dict[str, str] = {}


def pytest_configure(config: pytest.Config) -> None:
    import django
    from django.conf import settings

    server = _stack.enter_context(embedded.server_url())
    dbname = f"hybridpool_test_{os.getpid()}"
    conninfo = embedded.create_database(server, dbname)
    _stack.callback(embedded.drop_database, server, dbname)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        for role in (ROLE, ASYNC_ROLE):
            conn.execute(f"DROP ROLE IF EXISTS {role}")
        conn.execute(f"CREATE ROLE {ROLE}")
        conn.execute(f"CREATE ROLE {ASYNC_ROLE} LOGIN CONNECTION LIMIT {ASYNC_MAX_SIZE}")
        for role in (ROLE, ASYNC_ROLE):
            conn.execute(f"GRANT ALL ON SCHEMA public TO {role}")
    _stack.callback(_drop_role, conninfo)
    _state.update(server=server, conninfo=conninfo)

    def database(**options: Any) -> dict[str, Any]:
        app = {"application_name": f"hp-{uuid.uuid4().hex[:10]}"}
        if not PEER_KEYS & options.keys():  # an entry written for another pool has no "pool" dict
            options["pool"] = {"min_size": 1, "max_size": 4, "timeout": 5, **options.get("pool", {})}
        return embedded.django_settings(conninfo, OPTIONS={**app, **options})

    settings.configure(
        DATABASES={
            "default": database(),
            "serializable": database(isolation_level=psycopg.IsolationLevel.SERIALIZABLE),
            "role": database(assume_role=ROLE),
            "ssb": database(server_side_binding=True),
            "tiny": database(pool={"min_size": 0, "max_size": 1, "timeout": 0.3}),
            "asyncapp": {**database(pool={"min_size": 0, "max_size": ASYNC_MAX_SIZE}), "USER": ASYNC_ROLE},
            "replica": database(pool={"min_size": 0, "max_size": 2}),
            "testdb": database(),
            "atomic": {**database(), "ATOMIC_REQUESTS": True},
            "forcedgevent": database(pool={"driver": "gevent"}),
            "geventpool": database(MAX_CONNS=3, REUSE_CONNS=1),
            "aged": {**database(), "CONN_MAX_AGE": 60},
            "badpool": database(pool={"max_size": "10"}),
            "stock": {**database(), "ENGINE": "django.db.backends.postgresql"},
        },
        INSTALLED_APPS=["tests.testapp"],
        USE_TZ=True,
        TIME_ZONE="UTC",
        LOGGING_CONFIG=None,
    )
    gis.configure(settings, server, _stack)  # PostGIS tests: the "gis" alias and GIS apps, when available
    django.setup()

    from django.db import connection

    from tests.testapp.models import Author, Item, Sample

    with connection.schema_editor() as editor:
        for model in (Item, Author, Sample):
            editor.create_model(model)
    connection.close()
    with psycopg.connect(conninfo, autocommit=True) as conn:
        for role in (ROLE, ASYNC_ROLE):
            conn.execute(f"GRANT ALL ON ALL TABLES IN SCHEMA public TO {role}")
            conn.execute(f"GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO {role}")


def _drop_role(conninfo: str) -> None:
    with psycopg.connect(conninfo, autocommit=True) as conn:
        for role in (ROLE, ASYNC_ROLE):
            conn.execute("SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity WHERE usename = %s", [role])
            conn.execute(f"DROP OWNED BY {role}")
            conn.execute(f"DROP ROLE IF EXISTS {role}")


def pytest_terminal_summary(terminalreporter: Any) -> None:
    terminalreporter.write_line(gis.report_line())  # PostGIS tests: where they run, or why they are skipped


def pytest_unconfigure(config: pytest.Config) -> None:
    close_all()
    _stack.close()


@pytest.fixture(scope="session")
def server_url() -> str:
    """The URL of the test server (to create more databases on it)."""
    return _state["server"]


@pytest.fixture(scope="session")
def conninfo() -> str:
    """The conninfo of the test database."""
    return _state["conninfo"]


def server_connections(application_name: str, conninfo: str | None = None) -> int:
    """Count the server connections with ``application_name`` in ``pg_stat_activity`` (of the test
    server, or of the server of ``conninfo``)."""
    with psycopg.connect(conninfo or _state["conninfo"], autocommit=True) as conn:
        return conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", [application_name]
        ).fetchone()[0]


def server_states(application_name: str, conninfo: str | None = None) -> list[str]:
    """The ``pg_stat_activity`` states of the server connections with ``application_name``."""
    with psycopg.connect(conninfo or _state["conninfo"], autocommit=True) as conn:
        rows = conn.execute("SELECT state FROM pg_stat_activity WHERE application_name = %s", [application_name])
        return [state for (state,) in rows]


def terminate(application_name: str, conninfo: str | None = None) -> int:
    """End every server connection with ``application_name``, waiting until they are gone."""
    with psycopg.connect(conninfo or _state["conninfo"], autocommit=True) as conn:
        return conn.execute(
            "SELECT count(pg_terminate_backend(pid, 5000)) FROM pg_stat_activity WHERE application_name = %s",
            [application_name],
        ).fetchone()[0]


def wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
    """Poll ``predicate`` every 20 ms until it is true or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def run_concurrently(func: Callable[[int], Any], n: int, timeout: float = 30.0) -> list[Any]:
    """Run ``func(i)`` for i in range(n) at once, on threads (greenlets when gevent patched
    ``threading``); return results and raised exceptions, in order of i."""
    results: list[Any] = [None] * n

    def run(i: int) -> None:
        try:
            results[i] = func(i)
        except Exception as ex:  # returned for the test to assert on
            results[i] = ex

    workers = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout)
        assert not worker.is_alive(), "a worker did not finish in time"
    return results


@pytest.fixture
def capped_user(conninfo: str) -> Iterator[Callable[[int], str]]:
    """Make login roles whose server-side ``CONNECTION LIMIT`` is a pool's cap: a pool connecting
    as one can never pass the cap unnoticed, however short the peak (a connection past the limit
    is refused: ``too many connections for role``, counted in ``connections_errors``). Returns
    the role's name, for the ``user`` connection argument."""
    roles: list[str] = []

    def make(limit: int) -> str:
        role = f"hp_capped_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(conninfo, autocommit=True) as conn:
            conn.execute(f"CREATE ROLE {role} LOGIN CONNECTION LIMIT {int(limit)}")
            conn.execute(f"GRANT ALL ON SCHEMA public TO {role}")
            conn.execute(f"GRANT ALL ON ALL TABLES IN SCHEMA public TO {role}")
            conn.execute(f"GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO {role}")
        roles.append(role)
        return role

    yield make
    with psycopg.connect(conninfo, autocommit=True) as conn:
        for role in roles:
            conn.execute("SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity WHERE usename = %s", [role])
            conn.execute(f"DROP OWNED BY {role}")
            conn.execute(f"DROP ROLE {role}")


class PeakSampler:
    """Sample the server connections of one application_name every 10 ms in the background."""

    def __init__(self, application_name: str, conninfo: str | None = None) -> None:
        self.application_name = application_name
        self.conninfo = conninfo or _state["conninfo"]
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run)

    def _run(self) -> None:
        with psycopg.connect(self.conninfo, autocommit=True) as conn:
            while not self._stop.is_set():
                count = conn.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", [self.application_name]
                ).fetchone()[0]
                self.peak = max(self.peak, count)
                time.sleep(0.01)

    def __enter__(self) -> PeakSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


@pytest.fixture(params=DRIVERS)
def make_pool(request: pytest.FixtureRequest) -> Iterator[Callable[..., Any]]:
    """Build pools of the driver under test; each gets its own application_name (``pool.app``)."""
    pools = []

    def make(kwargs: dict[str, Any] | None = None, *, opened_by_constructor: bool = False, **settings: Any) -> Any:
        app = f"hp-{uuid.uuid4().hex[:10]}"
        settings.setdefault("min_size", 1)
        kwargs = {"application_name": app, **(kwargs or {})}
        if opened_by_constructor:  # the driver's class, open=True, as psycopg_pool's users build one
            config = PoolConfig.from_mapping({**settings, "driver": request.param})
            pool = pool_class(driver_for(config))(_state["conninfo"], kwargs=kwargs, config=config, open=True)
        else:
            pool = create_pool(_state["conninfo"], kwargs=kwargs, driver=request.param, **settings)
        pool.app = app
        pools.append(pool)
        return pool

    yield make
    for pool in pools:
        pool.close()
