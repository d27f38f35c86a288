"""Which driver class serves a pool, and ``create_pool``: a pool without Django."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.core.exceptions import ImproperlyConfigured

from .config import PoolConfig
from .pool import Conninfo, Kwargs, Pool
from .runtime import driver_for

if TYPE_CHECKING:
    from .asgi.pool import ThreadPool
    from .green.pool import GreenPool


def create_pool(conninfo: Conninfo = "", *, kwargs: Kwargs = None, open: bool = True,
                **settings: Any) -> Pool:
    """Build a pool of :class:`psycopg.Connection` for the calling code's runtime, no Django needed.

    :param conninfo: libpq connection string, e.g. ``"postgresql://user@host/db"``, or a callable
        returning one for each new connection (psycopg_pool's, e.g. for credentials that rotate).
    :param kwargs: more :func:`psycopg.connect` keyword arguments, or a callable returning them for
        each new connection.
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


def pool_class(driver: str) -> type[GreenPool[Any]] | type[ThreadPool[Any]]:
    """Return the :class:`Pool` class of ``driver`` (``"gevent"`` or ``"thread"``).

    :raises ImproperlyConfigured: ``"gevent"`` without gevent installed.
    """
    if driver == "gevent":
        try:
            from .green.pool import GreenPool
        except ImportError as ex:
            raise ImproperlyConfigured(
                f"hybridpool setting 'driver' = 'gevent' needs gevent, which cannot be imported ({ex});"
                " install it with: pip install 'hybridpool[gevent]'"
            ) from ex
        return GreenPool
    from .asgi.pool import ThreadPool

    return ThreadPool
