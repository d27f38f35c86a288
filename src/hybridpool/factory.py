"""``create_pool``: a pool without Django."""

from __future__ import annotations

from typing import Any

from .config import PoolConfig
from .pool import Pool
from .runtime import driver_for, pool_class


def create_pool(conninfo: str = "", *, kwargs: dict[str, Any] | None = None, open: bool = True,
                **settings: Any) -> Pool:
    """Build a pool of :class:`psycopg.Connection` for the calling code's runtime, no Django needed.

    :param conninfo: libpq connection string, e.g. ``"postgresql://user@host/db"``.
    :param kwargs: more :func:`psycopg.connect` keyword arguments.
    :param open: open it now (start filling it to ``min_size``); else call ``open()``.
    :param settings: :class:`PoolConfig` keys: ``min_size``, ``max_size``, ``timeout``, ``name``, ...;
        ``driver="auto"`` picks the green driver under gevent, else psycopg_pool's.
    :raises django.core.exceptions.ImproperlyConfigured: for a wrong setting, naming it.
    """
    config = PoolConfig.from_mapping(settings)
    pool = pool_class(driver_for(config))(conninfo, kwargs=kwargs, config=config)
    if open:
        pool.open()
    return pool
