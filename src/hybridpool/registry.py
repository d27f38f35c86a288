"""One pool per (alias, driver) in this process, and one async pool per (alias, event loop).

After ``fork()`` the child forgets its parent's pools without touching their connections (they
belong to the parent: closing them would end the parent's sessions), so it builds its own on first
use. At interpreter exit the pools of this process are closed, so the server sees a proper
terminate message for each connection; :func:`aclose_all` does it at an ASGI server's shutdown
(:mod:`hybridpool.asgi.lifespan`), since uvicorn ends its process by a signal that skips ``atexit``.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import os
import threading
import weakref
from collections.abc import Callable

from .asgi import LoopPool
from .pool import Pool

logger = logging.getLogger("hybridpool")

_lock = threading.Lock()
_pools: dict[tuple[str, str], Pool] = {}
_loop_pools: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, LoopPool]] = weakref.WeakKeyDictionary()


def get_or_create(alias: str, driver: str, factory: Callable[[], Pool]) -> Pool:
    """Return this process's open pool for (``alias``, ``driver``), built by ``factory`` if new."""
    try:
        return _pools[alias, driver]
    except KeyError:
        pass
    with _lock:
        pool = _pools.get((alias, driver))
        if pool is None:
            pool = factory()
            pool.open()
            _pools[alias, driver] = pool
    return pool


async def aget_or_create(alias: str, factory: Callable[[], LoopPool]) -> LoopPool:
    """Return the running loop's open async pool for ``alias``, built by ``factory`` if new."""
    pools = _loop_pools.setdefault(asyncio.get_running_loop(), {})
    pool = pools.get(alias)
    if pool is None:
        pool = pools[alias] = factory()
        _keep_alive.add(asyncio.get_running_loop().create_task(_close_at_loop_shutdown(pool)))
    if pool.closed:
        await pool.open()
    return pool


_keep_alive: set[asyncio.Task[None]] = set()


async def _close_at_loop_shutdown(pool: LoopPool) -> None:
    """Wait until the loop cancels its tasks (``asyncio.run`` ending, uvicorn stopping), then
    close ``pool`` in it. An async pool must be closed in its own loop: left open, psycopg_pool
    takes the cancellation of a connection attempt for a failed connect and retries it, which
    keeps the ending loop alive for up to ``reconnect_timeout``."""
    try:
        await asyncio.get_running_loop().create_future()
    except asyncio.CancelledError:
        await pool.close()
        raise
    finally:
        _keep_alive.discard(asyncio.current_task())  # type: ignore[arg-type]


def close_all(alias: str | None = None) -> None:
    """Close this process's pools (of ``alias`` only, if given); the next use builds new ones.

    Async pools are closed too when their loop is not running (at exit, after ``asyncio.run``);
    inside a running loop use ``await pool.close()``.
    """
    with _lock:
        for key in [key for key in _pools if alias in (None, key[0])]:
            _pools.pop(key).close()
    for loop, loop_pools in list(_loop_pools.items()):
        for name in [name for name in loop_pools if alias in (None, name)]:
            pool = loop_pools.pop(name)
            if not loop.is_closed() and not loop.is_running():
                loop.run_until_complete(pool.close())


async def aclose_all() -> None:
    """Close this process's pools from inside a running event loop: the loop's async pools in
    it, the others in a worker thread (closing a pool joins its threads)."""
    for pool in _loop_pools.pop(asyncio.get_running_loop(), {}).values():
        await pool.close()
    await asyncio.to_thread(close_all)


def _forget_after_fork() -> None:
    global _lock, _pools, _loop_pools
    _lock = threading.Lock()
    _pools = {}
    _loop_pools = weakref.WeakKeyDictionary()


os.register_at_fork(after_in_child=_forget_after_fork)
atexit.register(close_all)
