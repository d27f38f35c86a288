"""A pytest plugin that runs psycopg_pool's own test suite against a hybridpool driver.

psycopg's pool tests (``test_pool.py``, ``test_pool_common.py``, ``test_sched.py``) build their pools
with ``pool.ConnectionPool(...)``, ``pool`` being each module's ``import psycopg_pool as pool``. This
plugin puts a stand-in module in its place before the tests run: every name is psycopg_pool's but
``ConnectionPool``, which is the driver named by ``HYBRIDPOOL_SUITE_DRIVER`` (``thread``: the
psycopg_pool driver, :class:`hybridpool.asgi.ThreadPool`; ``gevent``: the green driver,
:class:`hybridpool.green.GreenPool`) behind psycopg_pool's constructor. No assertion is touched.

psycopg_pool's arguments map onto :class:`hybridpool.PoolConfig` with psycopg_pool's meaning:
``check=None`` is ``check="never"`` and ``reset=None`` is ``reset="rollback"`` (psycopg_pool checks
nothing and only rolls back unless told otherwise), ``open=None`` opens the pool, as
psycopg_pool's ``ConnectionPool`` does. Where hybridpool documents another behaviour, the tests that
see it are listed in :data:`differences.DIFFERENCES` with the reason, per configuration of
``run.py`` (``HYBRIDPOOL_SUITE_CONFIG``), and marked ``xfail(strict=True)``:
a listed test that starts passing fails the run, so the list cannot go stale.
"""

from __future__ import annotations

import os
import sys
import types
from typing import Any, TypeVar

import psycopg
import psycopg_pool
import pytest

sys.path.insert(0, os.path.dirname(__file__))
from differences import DIFFERENCES, NO_NULL_POOL, NOT_STRICT  # noqa: E402

CT = TypeVar("CT", bound="psycopg.Connection[Any]")

#: The test modules whose ``pool`` global is replaced.
MODULES = ("tests.pool.test_pool", "tests.pool.test_pool_common")


def _driver_class(driver: str) -> type:
    if driver == "thread":
        from hybridpool.asgi import ThreadPool

        return ThreadPool
    if driver == "gevent":
        from hybridpool.green import GreenPool

        return GreenPool
    raise pytest.UsageError(f"HYBRIDPOOL_SUITE_DRIVER={driver!r}: use 'thread' or 'gevent'")


def adapted(driver: str) -> type:
    """The class of ``driver``'s pools with psycopg_pool's ``ConnectionPool`` constructor."""
    from hybridpool import PoolConfig

    base: type = _driver_class(driver)

    class ConnectionPool(base[CT]):  # type: ignore[misc,valid-type]
        def __init__(self, conninfo: str = "", *, connection_class: type = psycopg.Connection,
                     kwargs: dict[str, Any] | None = None, min_size: int = 4, max_size: int | None = None,
                     open: bool | None = None, configure: Any = None, check: Any = None, reset: Any = None,
                     name: str | None = None, close_returns: bool = False, timeout: float = 30.0,
                     max_waiting: int = 0, max_lifetime: float = 3600.0, max_idle: float = 600.0,
                     reconnect_timeout: float = 300.0, reconnect_failed: Any = None, num_workers: int = 3) -> None:
            config = PoolConfig.from_mapping({
                "min_size": min_size, "max_size": max_size, "timeout": timeout, "max_waiting": max_waiting,
                "max_lifetime": max_lifetime, "max_idle": max_idle, "reconnect_timeout": reconnect_timeout,
                "check": "never" if check is None else check, "reset": "rollback" if reset is None else reset,
                "configure": configure, "reconnect_failed": reconnect_failed, "num_workers": num_workers,
                "name": name, "driver": driver,
            })
            super().__init__(conninfo, kwargs=kwargs, config=config, open=open is not False,
                             connection_class=connection_class)

    ConnectionPool.__qualname__ = ConnectionPool.__name__ = f"ConnectionPool[{base.__name__}]"
    return ConnectionPool


def _stand_in(driver: str) -> types.ModuleType:
    module = types.ModuleType("psycopg_pool", "psycopg_pool, with a hybridpool driver as ConnectionPool")
    module.__dict__.update({name: getattr(psycopg_pool, name) for name in dir(psycopg_pool)
                            if not name.startswith("__")})
    module.ConnectionPool = adapted(driver)  # type: ignore[attr-defined]
    return module


def pytest_report_header(config: pytest.Config) -> str:
    return (f"hybridpool driver under psycopg_pool's tests: {os.environ.get('HYBRIDPOOL_SUITE_DRIVER')}"
            f" (configuration {os.environ.get('HYBRIDPOOL_SUITE_CONFIG')})")


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    driver = os.environ.get("HYBRIDPOOL_SUITE_DRIVER", "")
    configuration = os.environ.get("HYBRIDPOOL_SUITE_CONFIG", driver)
    stand_in = _stand_in(driver)
    kept, dropped = [], []
    for item in items:
        module = getattr(item, "module", None)
        if module is not None and module.__name__ in MODULES:
            module.pool = stand_in
        if NO_NULL_POOL in item.nodeid:
            dropped.append(item)
            continue
        kept.append(item)
        name = item.nodeid.split("::", 1)[-1]
        for (configurations, pattern), reason in DIFFERENCES.items():
            if configuration in configurations and (name == pattern or name.startswith(pattern + "[")):
                item.add_marker(pytest.mark.xfail(reason=reason, strict=reason not in NOT_STRICT))
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept
