"""Which pools the metrics cover, and the names of each (pool name, alias, driver).

Django's pools are this process's (:func:`hybridpool.registry.pools`); a pool made by
``create_pool()`` or a driver class is covered once passed to :func:`track`.
"""

from __future__ import annotations

import weakref
from typing import Any

from .. import registry
from ..asgi.pool import LoopPool, ThreadPool
from .readings import PoolStats

__all__ = ["track", "labels", "snapshot"]

_LABELS = "_hybridpool_metrics_labels"  # (pool name, alias, driver), kept on the pool once known
_tracked: weakref.WeakSet[Any] = weakref.WeakSet()


def driver_of(pool: Any) -> str:
    """``"async"``, ``"thread"`` or ``"gevent"``: the driver whose class ``pool`` is."""
    if isinstance(pool, LoopPool):
        return "async"
    if isinstance(pool, ThreadPool):
        return "thread"
    return "gevent"  # GreenPool, not imported here: it needs gevent


def track(pool: Any, alias: str = "") -> None:
    """Cover ``pool`` (any driver's, made without Django: ``create_pool()``, ``ThreadPool``,
    ``LoopPool``) in the metrics, for as long as it exists, under ``alias`` (default ``""``)."""
    setattr(pool, _LABELS, (pool.name, alias, driver_of(pool)))
    _tracked.add(pool)


def labels(pool: Any) -> tuple[str, str, str]:
    """``(pool name, alias, driver)`` of ``pool``: the registry's alias and driver for Django's
    pools (kept on the pool once found), else ``(name, "", its class's driver)``."""
    found: tuple[str, str, str] | None = getattr(pool, _LABELS, None)
    if found is not None:
        return found
    for alias, driver, known in registry.pools():
        if known is pool:
            setattr(pool, _LABELS, found := (pool.name, alias, driver))
            return found
    return pool.name, "", driver_of(pool)  # not kept: a Django pool opening is registered once open


def snapshot() -> list[PoolStats]:
    """The stats of every covered pool of this process, read now (from any thread)."""
    found = []
    seen = set()
    for alias, driver, pool in registry.pools():
        seen.add(id(pool))
        found.append(PoolStats(pool.name, alias, driver, _stats(pool)))
    for pool in list(_tracked):
        if id(pool) not in seen and not pool.closed:
            found.append(PoolStats(*labels(pool), _stats(pool)))
    return found


def _stats(pool: Any) -> dict[str, int]:
    """``pool.get_stats()``; read from a thread other than the pool's (an async pool's loop), the
    copy of its counters may race with a new key: tried again."""
    for _ in range(3):
        try:
            return dict(pool.get_stats())
        except RuntimeError:  # dictionary changed size during iteration
            continue
    return dict(pool.get_stats())
