"""Pooled connections for code that Django's request cycle does not cover, and for async code.

``with connection():`` lends the calling greenlet or thread a pooled connection for a block, bound
to Django's connection for the alias so ORM calls in the block use it; ``async with aconnection():``
lends a :class:`psycopg.AsyncConnection` from the running loop's pool; ``close_connection`` is
django-db-geventpool's decorator, for code moving from it.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any, TypeVar, cast

import psycopg
from django.core.exceptions import ImproperlyConfigured
from django.db import DEFAULT_DB_ALIAS, connections

from . import registry
from .asgi import LoopPool
from .asgi.budget import BudgetedConnection, budgeted
from .cursors import AsyncResettingCursor
from .backends.postgresql.base import DatabaseWrapperMixin
from .pool import Pool

F = TypeVar("F", bound=Callable[..., Any])


def _wrapper(alias: str) -> DatabaseWrapperMixin:
    wrapper = connections[alias]
    if not isinstance(wrapper, DatabaseWrapperMixin):
        raise ImproperlyConfigured(
            f"DATABASES[{alias!r}]['ENGINE'] = {wrapper.settings_dict['ENGINE']!r}: hybridpool needs"
            " 'hybridpool.backends.postgresql' or 'hybridpool.backends.postgis'"
        )
    return wrapper


def get_pool(alias: str = DEFAULT_DB_ALIAS) -> Pool:
    """Return this process's pool for database ``alias`` and the calling code's driver.

    :raises ImproperlyConfigured: the alias does not use a hybridpool ENGINE, or its settings are wrong.
    """
    return _wrapper(alias).get_pool()


@contextmanager
def connection(alias: str = DEFAULT_DB_ALIAS) -> Iterator[psycopg.Connection[Any]]:
    """Lend the current greenlet or thread a pooled connection for a block; yield it for raw SQL.

    The connection becomes Django's connection for ``alias`` in this greenlet or thread, so ORM
    calls in the block use it, and it goes back to the pool when the block ends, on an exception
    too (the pool rolls back what was left open). A nested block, or one entered while Django
    already holds a connection, reuses it and leaves it in place. Use ``@connection()`` to wrap a
    function, a greenlet or a task.

    :raises django.db.OperationalError: no connection within the pool's ``timeout``.
    """
    wrapper = _wrapper(alias)
    opened = wrapper.connection is None
    wrapper.ensure_connection()
    try:
        yield wrapper.connection
    finally:
        if opened:
            wrapper.close()


def close_connection(func: F) -> F:
    """Decorate ``func`` so that every connection it took returns to its pool when it ends.

    django-db-geventpool's ``close_connection`` decorator, for spawned greenlets and tasks.
    """

    @functools.wraps(func)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        finally:
            connections.close_all()

    return cast(F, wrapped)


async def aget_pool(alias: str = DEFAULT_DB_ALIAS) -> LoopPool[BudgetedConnection]:
    """Return the running event loop's async pool for database ``alias``, opening it if new.

    The async pools of an alias share its ``max_size`` in the process, whatever the loops; the
    pool of a loop an ASGI application serves keeps ``min_size`` connections, another loop's
    (``asyncio.run``, ``async_to_sync``) opens them on demand, and each is closed when its loop ends.
    """
    def make_pool(keeps_min_size: bool) -> LoopPool[BudgetedConnection]:
        # The wrapper only for a new pool: in a loop's thread Django's connections are
        # context-local, so ``connections[alias]`` would build a wrapper for each request.
        wrapper = _wrapper(alias)
        kwargs = wrapper.pool_connection_params()
        # Django's cursor class is synchronous: pick the async one of the same binding.
        server_side = wrapper.settings_dict["OPTIONS"].get("server_side_binding") is True
        kwargs["cursor_factory"] = psycopg.AsyncCursor if server_side else AsyncResettingCursor
        config = wrapper.pool_config
        config = dataclasses.replace(config, name=f"{alias} (async)",
                                     min_size=config.min_size if keeps_min_size else 0)
        shared = budgeted(registry.budget(alias, config.sizes[1]), timeout=config.timeout)
        return LoopPool(kwargs=kwargs, config=config, connection_class=shared)

    return await registry.aget_or_create(alias, make_pool)


@asynccontextmanager
async def aconnection(alias: str = DEFAULT_DB_ALIAS,
                      timeout: float | None = None) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
    """Lend a :class:`psycopg.AsyncConnection` from the running loop's pool for ``alias``.

    The connection is in autocommit (``async with aconn.transaction():`` for a transaction) and
    returns to the pool at block exit, on an exception too; what is left open is rolled back.

    :param timeout: longest wait in seconds (``None``: the pool's ``timeout``).
    :raises PoolTimeout: no connection within ``timeout``.
    """
    pool = await aget_pool(alias)
    async with pool.connection(timeout) as conn:
        yield conn
