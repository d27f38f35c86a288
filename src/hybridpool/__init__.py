"""hybridpool: a PostgreSQL connection pool for Django, native to asyncio and to gevent.

The ENGINE ``hybridpool.backends.postgresql`` pools Django's connections in every deployment;
these names serve code outside Django's request cycle and code without Django.
"""

from .config import PoolConfig, PoolSettingError
from .factory import create_pool
from .orm import aconnection, aget_pool, close_connection, connection, get_pool
from .pool import AsyncPool, Pool, PoolClosed, PoolTimeout, TooManyRequests
from .registry import close_all

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

__version__ = "0.1.0"


def __getattr__(name: str) -> object:
    """``NativeQuerySet``, imported on first use (it needs Django's models)."""
    if name == "NativeQuerySet":
        from .native import NativeQuerySet

        return NativeQuerySet
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
