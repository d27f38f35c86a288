"""One pool per (alias, driver) in this process, and one async pool per (alias, event loop).

The async pools of an alias share one ``max_size`` in the process, whatever the loops
(:class:`~hybridpool.asgi.budget.ConnectionBudget`), and the pool of a loop is closed in it when
the loop ends. A loop that an ASGI application serves (:func:`serving`) keeps ``min_size``
connections open; any other loop (``asyncio.run``, asgiref's ``async_to_sync`` outside a running
loop, a test's) opens them on demand only.

After ``fork()`` the child forgets its parent's pools without touching their connections (they
belong to the parent: closing them would end the parent's sessions), so it builds its own on first
use. At interpreter exit the pools of this process are closed, so the server sees a proper
terminate message for each connection; :func:`aclose_all` does it at an ASGI server's shutdown
(:mod:`hybridpool.asgi.application`), and :mod:`hybridpool.exit_guard` when the server ends its
process by re-raising SIGTERM, which skips ``atexit``.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import sys
import threading
import weakref
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from . import exit_guard, process
from .asgi.pool import LoopPool
from .asgi.budget import ConnectionBudget
from .pool import Pool

logger = logging.getLogger("hybridpool")

_lock = threading.Lock()
_pools: dict[tuple[str, str], Pool] = {}
_loop_pools: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, LoopPool[Any]]] = (
    weakref.WeakKeyDictionary())
_budgets: dict[str, ConnectionBudget] = {}
_serving: weakref.WeakSet[asyncio.AbstractEventLoop] = weakref.WeakSet()


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
            _close_at_celery_process_exit()
    exit_guard.install_soon(close_all)
    return pool


_celery_hooked = False


def _close_at_celery_process_exit() -> None:
    """In a Celery worker, close the pools at its ``worker_process_shutdown`` signal: a prefork
    child ends with ``os._exit()``, which runs no ``atexit`` hook, and would leave every
    connection without a terminate message. Once per process tree (a forked child inherits the
    receiver); Celery is not imported to ask."""
    global _celery_hooked
    if _celery_hooked or "celery" not in sys.modules:
        return
    _celery_hooked = True
    from celery.signals import worker_process_shutdown

    worker_process_shutdown.connect(_close_all_at_signal, weak=False)


def _close_all_at_signal(**kwargs: Any) -> None:
    close_all()


def serving(loop: asyncio.AbstractEventLoop) -> None:
    """Say that ``loop`` serves an ASGI application for as long as the process does: its async
    pools keep ``min_size`` connections open."""
    _serving.add(loop)


def is_serving(loop: asyncio.AbstractEventLoop) -> bool:
    """True if an ASGI application said ``loop`` serves it (:func:`serving`)."""
    return loop in _serving


def budget(alias: str, max_size: int) -> ConnectionBudget:
    """The ``max_size`` that the async pools of ``alias`` share in this process."""
    with _lock:
        found = _budgets.get(alias)
        if found is None or found.limit != max_size:
            found = _budgets[alias] = ConnectionBudget(max_size, alias)
        return found


async def aget_or_create(alias: str, factory: Callable[[bool], LoopPool[Any]]) -> LoopPool[Any]:
    """Return the running loop's open async pool for ``alias``; if new, built by
    ``factory(keeps_min_size)``, whose argument says whether the loop is one an ASGI application
    serves (:func:`serving`), and closed in the loop when the loop ends."""
    loop = asyncio.get_running_loop()
    pools = _loop_pools.setdefault(loop, {})
    pool = pools.get(alias)
    if pool is None:
        _forget_ended_loops()
        pool = pools[alias] = factory(loop in _serving)
        _keep_alive.add(loop.create_task(_close_at_loop_shutdown(pools, alias, pool)))
        exit_guard.install_soon(close_all)
    if pool.closed:
        await pool.open()
    return pool


_keep_alive: set[asyncio.Task[None] | Future[None]] = set()


async def _close_at_loop_shutdown(pools: dict[str, LoopPool[Any]], alias: str, pool: LoopPool[Any]) -> None:
    """Wait until the loop cancels its tasks (``asyncio.run`` and asgiref's ``async_to_sync``
    ending, uvicorn stopping), then close ``pool`` (:meth:`LoopPool.close_now`): left open,
    psycopg_pool would take the cancellation of a connection attempt for a failed connect and
    retry it, keeping the ending loop alive for up to ``reconnect_timeout``."""
    try:
        await asyncio.get_running_loop().create_future()
    finally:
        pool.close_now()
        if pools.get(alias) is pool:
            del pools[alias]
        _keep_alive.discard(asyncio.current_task())


def _forget_ended_loops() -> None:
    """Drop the pools of loops closed without cancelling their tasks (so without closing their
    pools): their connections are closed with libpq, and their share of the budget freed; and
    the guardians those loops will never run."""
    for loop in [loop for loop in list(_loop_pools.keys()) if loop.is_closed()]:
        for pool in _loop_pools.pop(loop, {}).values():
            pool.close_now()
    for task in [task for task in list(_keep_alive) if isinstance(task, asyncio.Task) and task.get_loop().is_closed()]:
        _keep_alive.discard(task)


def _close_loop_pool(loop: asyncio.AbstractEventLoop, pool: LoopPool[Any]) -> None:
    """Close ``pool`` in its own ``loop``, from any thread, without waiting on a running loop."""
    if loop.is_closed():
        pool.close_now()
    elif not loop.is_running():
        loop.run_until_complete(pool.close())
    elif _running_loop() is loop:
        _keep_alive.add(task := loop.create_task(pool.close()))
        task.add_done_callback(_keep_alive.discard)
    else:
        _keep_alive.add(future := asyncio.run_coroutine_threadsafe(pool.close(), loop))
        future.add_done_callback(_keep_alive.discard)


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def close_all(alias: str | None = None) -> None:
    """Close this process's pools (of ``alias`` only, if given); the next use builds new ones.

    An async pool is closed in its own loop: at once if the loop is not running (at exit, after
    ``asyncio.run``), else as a task of that loop; inside a running loop, ``await pool.close()``
    closes one before going on.
    """
    with _lock:
        for key in [key for key in _pools if alias in (None, key[0])]:
            _pools.pop(key).close()
    for loop, loop_pools in list(_loop_pools.items()):
        for name in [name for name in loop_pools if alias in (None, name)]:
            _close_loop_pool(loop, loop_pools.pop(name))


async def aclose_all() -> None:
    """Close this process's pools from inside a running event loop: the loop's async pools in
    it, the others in a worker thread (closing a pool joins its threads)."""
    for pool in _loop_pools.pop(asyncio.get_running_loop(), {}).values():
        await pool.close()
    await asyncio.to_thread(close_all)


@process.after_fork_in_child
def _forget_after_fork() -> None:
    global _lock, _pools, _loop_pools, _budgets, _serving
    _lock = threading.Lock()
    _pools = {}
    _loop_pools = weakref.WeakKeyDictionary()
    _budgets = {}
    _serving = weakref.WeakSet()


atexit.register(close_all)


def sync_pools() -> list[Pool]:
    """This process's pools of threads and greenlets (a snapshot: one atomic copy, no lock)."""
    return list(_pools.values())


def pools() -> list[tuple[str, str, Pool | LoopPool[Any]]]:
    """This process's pools, as ``(alias, driver, pool)``: ``driver`` is ``"gevent"`` or
    ``"thread"`` for the pools of greenlets and threads (:func:`get_or_create`), ``"async"`` for
    the event loops' pools (:func:`aget_or_create`, one per loop and alias). Read-only, from any
    thread: a snapshot that pools opened or closed meanwhile may miss."""
    with _lock:
        found: list[tuple[str, str, Pool | LoopPool[Any]]] = [
            (alias, driver, pool) for (alias, driver), pool in _pools.items()]
    for _ in range(3):  # the loops' dicts change in their own threads: retry a copy that raced
        try:
            loop_pools = [list(by_alias.items()) for by_alias in list(_loop_pools.values())]
        except RuntimeError:  # changed size during iteration
            continue
        found += [(alias, "async", pool) for items in loop_pools for alias, pool in items]
        break
    return found
