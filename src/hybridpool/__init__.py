"""hybridpool: a PostgreSQL connection pool for Django, native to asyncio and to gevent.

The ENGINE ``hybridpool.backends.postgresql`` pools Django's connections in every deployment;
these names serve code outside Django's request cycle and code without Django. ``import hybridpool``
and :func:`create_pool` do not import Django's database layer; the names that need it are imported
on first use.
"""

from typing import TYPE_CHECKING

from .config import PoolConfig
from .validation import PoolSettingError
from .factory import create_pool
from .pool import AsyncPool, Pool, PoolClosed, PoolTimeout, TooManyRequests

if TYPE_CHECKING:
    from .native import NativeQuerySet
    from .orm import aconnection, aget_pool, close_connection, connection, get_pool
    from .registry import close_all

#: Names imported on first use: they need Django's database layer (``import hybridpool`` and
#: ``create_pool()`` do not), or, for ``close_all``, the registry of every driver's pools.
_LAZY = {"NativeQuerySet": "native", "aconnection": "orm", "aget_pool": "orm", "close_connection": "orm",
         "connection": "orm", "get_pool": "orm", "close_all": "registry"}

__all__ = [
    "AsyncPool",
    "NativeQuerySet",
    "Pool",
    "PoolClosed",
    "PoolConfig",
    "PoolSettingError",
    "PoolTimeout",
    "TooManyRequests",
    "aconnection",
    "aget_pool",
    "close_all",
    "close_connection",
    "connection",
    "create_pool",
    "get_pool",
]

__version__ = "0.2.0"


def __getattr__(name: str) -> object:
    """The names of :data:`_LAZY`, imported on first use."""
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value  # once
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
