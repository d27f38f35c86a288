"""Async-native ORM reads: ``NativeQuerySet``'s bounded reads run on the event loop, no thread hop.

Django's async ORM methods (``aget``, ``afirst``, ...) run their sync twin in a thread through
``sync_to_async``. :class:`NativeQuerySet` runs that same sync method, unchanged (Django's query
compilation, its row conversion, its exceptions), in a greenlet on the event loop's thread, and each
time Django's code would wait on the database, the greenlet hands the I/O to the event loop: the
query runs on a :class:`psycopg.AsyncConnection` of hybridpool's async pool for that loop, and the
greenlet resumes with its result. This is the bridge SQLAlchemy's asyncio extension is built on
(``sqlalchemy.util._concurrency_py3k``: a greenlet whose I/O is awaited by its parent).

In the greenlet, Django's connection for the alias is a wrapper of this module's
(:class:`NativeWrapper`, one per call in flight) whose cursor awaits the async connection. In an
event loop's thread Django's connections are context-local (asgiref's ``Local``), and the greenlet
runs in its own copy of the task's context: no other code sees that wrapper.

A call runs natively only where that cannot change what the code sees, else on the thread path,
as Django runs it (:func:`why_not_native` says why); a ``SynchronousOnlyOperation`` raised by the
native run (something that would need the thread's own connection) sends the call to the thread
path too.
"""

from __future__ import annotations

import asyncio
import collections
import contextvars
import os
import types
import weakref
from collections.abc import Awaitable, Callable, Coroutine, Generator
from typing import TYPE_CHECKING, Any, TypeVar, cast

import greenlet
from asgiref.sync import AsyncToSync
from django.conf import settings
from django.core.exceptions import SynchronousOnlyOperation
from django.db import connections
from django.db.models import Model, QuerySet
from django.db.utils import load_backend

from . import registry

if TYPE_CHECKING:
    from django.db.backends.base.base import BaseDatabaseWrapper as _WrapperBase
else:
    _WrapperBase = object

T = TypeVar("T")
_M = TypeVar("_M", bound=Model, covariant=True)

#: Reads of this process by the path they took: ``native`` (on the event loop), ``thread`` (Django's
#: thread path, where native could change what the code sees), ``retried`` (begun natively, then
#: run on the thread path: ``native_or_thread()``).
stats: collections.Counter[str] = collections.Counter()

#: ``HYBRIDPOOL_NATIVE=force``: run natively also on loops no ASGI application serves and under
#: an enclosing ``async_to_sync`` (tests whose data is committed: see tests/django_suite).
FORCED = os.environ.get("HYBRIDPOOL_NATIVE") == "force"


# -- the bridge: Django's sync code in a greenlet, its I/O awaited by the coroutine


class _Bridge(greenlet.greenlet):  # type: ignore[misc]  # greenlet ships no types: Any
    """The greenlet of one native call: runs Django's sync code; :func:`await_` hands its I/O to
    the coroutine that switched into it (its parent)."""


def await_(coroutine: Coroutine[Any, Any, T]) -> T:
    """From Django's sync code running in a bridge greenlet: await ``coroutine`` on the event loop
    and return its result (or raise its exception).

    Its first step runs here, in the greenlet, on the loop's thread: a coroutine that ends
    without waiting (psycopg's ``fetchone``, ``fetchmany``, ``fetchall`` and ``close`` outside a
    pipeline) costs no switch to the awaiting task. One that waits is carried on by that task.

    :raises SynchronousOnlyOperation: called outside a bridge greenlet.
    """
    current = greenlet.getcurrent()
    if not isinstance(current, _Bridge):
        coroutine.close()
        raise SynchronousOnlyOperation("hybridpool's native cursor can only be used by a NativeQuerySet read")
    try:
        waiting_on = coroutine.send(None)
    except StopIteration as done:
        return cast(T, done.value)
    return cast(T, current.parent.switch(_carry_on(coroutine, waiting_on)))


@types.coroutine
def _carry_on(coroutine: Coroutine[Any, Any, T], waiting_on: Any) -> Generator[Any, Any, T]:
    """Carry on ``coroutine``, suspended on ``waiting_on`` after its first step, under the task
    that awaits this: what ``yield from`` does, from the second step on."""
    while True:
        try:
            value = yield waiting_on
        except BaseException as ex:  # noqa: BLE001 - the task's (a cancellation): the coroutine decides
            try:
                waiting_on = coroutine.throw(ex)
            except StopIteration as done:
                return cast(T, done.value)
        else:
            try:
                waiting_on = coroutine.send(value)
            except StopIteration as done:
                return cast(T, done.value)


async def run_bridged(function: Callable[[], T]) -> T:
    """Run ``function`` in a bridge greenlet, awaiting here each awaitable it hands over with
    :func:`await_`. A cancellation or an exception of an awaited I/O is thrown into the greenlet
    where it waits. The greenlet runs in a copy of the task's context (its context variables:
    urlconf, language, Django's connections of the loop's thread, which are context-local there)."""
    bridge = _Bridge(function, parent=greenlet.getcurrent())
    bridge.gr_context = contextvars.copy_context()
    result = bridge.switch()
    while not bridge.dead:
        try:
            value = await result
        except BaseException as ex:  # noqa: BLE001 - raised in the greenlet, where Django's code handles it
            result = bridge.throw(ex)
        else:
            result = bridge.switch(value)
    return cast(T, result)


class BridgedCursor:
    """A DB-API cursor for Django's ``CursorWrapper`` over a psycopg async cursor: each method
    awaits its twin through the bridge; ``execute`` marks ``wrapper`` as having sent a query."""

    def __init__(self, cursor: Any, wrapper: NativeWrapper) -> None:
        self._cursor = cursor
        self._wrapper = wrapper

    def execute(self, query: Any, params: Any = None) -> BridgedCursor:
        self._wrapper.queried = True
        await_(self._cursor.execute(query, params))
        return self

    def executemany(self, query: Any, params_seq: Any) -> BridgedCursor:
        await_(self._cursor.executemany(query, params_seq))
        return self

    def fetchone(self) -> Any:
        return await_(self._cursor.fetchone())

    def fetchmany(self, size: int = 0) -> list[Any]:
        return await_(self._cursor.fetchmany(size))

    def fetchall(self) -> list[Any]:
        return await_(self._cursor.fetchall())

    def close(self) -> None:
        await_(self._cursor.close())

    def __iter__(self) -> Any:
        return iter(self.fetchall())

    def __getattr__(self, name: str) -> Any:  # description, rowcount, query, ...
        return getattr(self._cursor, name)


class NativeWrapper(_WrapperBase):
    """The part of a Django connection wrapper for a native call: its ``connection`` is the call's
    :class:`psycopg.AsyncConnection` (set by :func:`run_native`), its cursors are bridged; it never
    connects nor closes. Mixed into the alias's own wrapper class (:func:`_wrapper_class`)."""

    connection: Any

    def ensure_connection(self) -> None:
        if self.connection is None:
            raise SynchronousOnlyOperation("no async connection lent to this native call")

    def cursor(self) -> Any:  # Django's is async_unsafe: this one runs in a bridge greenlet
        self.ensure_connection()
        return self._prepare_cursor(self.create_cursor())  # type: ignore[attr-defined]  # Django's, not in django-stubs

    #: Set once the call sent a query.
    queried = False

    def create_cursor(self, name: str | None = None) -> BridgedCursor:
        if name is not None:
            raise SynchronousOnlyOperation("a server-side cursor is not a bounded read")
        return BridgedCursor(self.connection.cursor(), self)

    def close(self) -> None:
        self.connection = None


_wrapper_classes: dict[type, type] = {}
#: Native wrappers not in use, per event loop and alias: each caches what Django learns once per
#: connection wrapper (the server's version, the features).
_idle_wrappers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, list[Any]]] = weakref.WeakKeyDictionary()


def _wrapper_class(base: type) -> type:
    cls = _wrapper_classes.get(base)
    if cls is None:
        cls = _wrapper_classes[base] = type(f"Native{base.__name__}", (NativeWrapper, base), {})
    return cls


def _take_wrapper(loop: asyncio.AbstractEventLoop, alias: str) -> Any:
    idle = _idle_wrappers.setdefault(loop, {}).setdefault(alias, [])
    if idle:
        return idle.pop()
    entry = connections.settings[alias]
    wrapper = _wrapper_class(load_backend(entry["ENGINE"]).DatabaseWrapper)(entry, alias)
    wrapper.connection = None
    return wrapper


# -- when a call may run natively


def why_not_native(queryset: QuerySet[Any]) -> str | None:
    """Why ``queryset``'s read would not run natively now, or None if it can.

    Not natively: on a loop no ASGI application of hybridpool's serves (a throw-away loop would
    build a pool for one call); under an enclosing ``async_to_sync`` (sync code calling async
    code: its data may sit in the calling thread's open transaction, as in Django's ``TestCase``);
    where the loop's thread holds the alias's connection or an atomic block, logs queries
    (``DEBUG``, ``force_debug_cursor``) or has ``execute_wrapper`` s; for ``select_for_update``;
    for an alias that is not a pooled hybridpool alias, or sets ``assume_role`` (set per checkout
    on the thread path).
    """
    alias = queryset.db
    if not FORCED:
        if not registry.is_serving(asyncio.get_running_loop()):
            return "the event loop is not one an ASGI application of hybridpool's serves"
        if getattr(AsyncToSync.executors, "current", None) is not None:
            return "sync code calls this async code (async_to_sync)"
    # The loop thread's wrapper, if it has one.
    own = getattr(connections._connections, alias, None)  # type: ignore[attr-defined]  # private: not in django-stubs
    if own is not None:
        if own.connection is not None or own.in_atomic_block:
            return "the event loop's thread holds a connection or an atomic block for the alias"
        if own.execute_wrappers or own.force_debug_cursor:
            return "the alias's connection has execute wrappers or logs its queries"
    if settings.DEBUG:
        return "DEBUG logs queries"
    if queryset.query.select_for_update:
        return "select_for_update needs a transaction"
    entry = connections.settings[alias]
    if not entry["ENGINE"].startswith("hybridpool.") or entry["OPTIONS"].get("pool", True) is False:
        return "the alias is not pooled by hybridpool"
    if entry["OPTIONS"].get("assume_role"):
        return "assume_role is set on each checkout of the thread path"
    return None


async def run_native(alias: str, function: Callable[[], T]) -> T:
    """Run Django's sync ``function`` (a read of ``alias``) in a bridge greenlet, with an async
    connection of the loop's pool as the alias's connection."""
    from .orm import aget_pool

    loop = asyncio.get_running_loop()
    wrapper = _take_wrapper(loop, alias)
    pool = await aget_pool(alias)

    def read() -> T:
        # Django's connections are context-local in a loop's thread: this is the greenlet's own
        # copy of the task's context, which no other code sees.
        connections[alias] = wrapper
        return function()

    try:
        conn = await pool.getconn(carry=True)  # its first query carries a pending reset
        try:
            wrapper.connection = conn
            return await run_bridged(read)
        except Exception as ex:
            setattr(ex, "hybridpool_queried", wrapper.queried)
            raise
        finally:
            await pool.putconn(conn)
    finally:
        wrapper.connection = None
        wrapper.queried = False
        _idle_wrappers.setdefault(loop, {}).setdefault(alias, []).append(wrapper)


async def native_or_thread(queryset: QuerySet[Any], read: Callable[[], T], fallback: Callable[[], Awaitable[T]]) -> T:
    """Run ``read()`` (Django's sync read of ``queryset``) natively if it can (:func:`why_not_native`),
    else ``fallback()``: Django's thread path, which also runs a read whose native run raised
    ``SynchronousOnlyOperation`` (it needed the thread's own connection), or raised before it sent
    any query (its compilation needs what only the thread path has; there it raises again if it
    must), so that the code sees what Django's path gives it."""
    if why_not_native(queryset) is not None:
        stats["thread"] += 1
        return await fallback()
    try:
        result = await run_native(queryset.db, read)
    except SynchronousOnlyOperation:
        stats["retried"] += 1
        return await fallback()
    except Exception as ex:
        if getattr(ex, "hybridpool_queried", True):
            stats["native"] += 1
            raise
        stats["retried"] += 1
        return await fallback()
    stats["native"] += 1
    return result


class NativeQuerySet(QuerySet[_M]):
    """A :class:`~django.db.models.QuerySet` whose bounded async reads run on the event loop.

    ``aget``, ``afirst``, ``alast``, ``aearliest``, ``alatest``, ``acount``, ``aexists``,
    ``acontains``, ``aaggregate`` and ``ain_bulk`` run Django's own sync method in a greenlet on the
    loop, with the I/O on an async connection of hybridpool's pool for that loop: same results,
    types and exceptions as Django's ``sync_to_async`` path, without the thread hop. Where running
    natively could change what the code sees they take the thread path, per call
    (:func:`~hybridpool.native.why_not_native`). Opt in per model: ``objects = NativeQuerySet.as_manager()``.
    """

    async def aget(self, *args: Any, **kwargs: Any) -> Any:
        return await native_or_thread(self, lambda: self.get(*args, **kwargs),
                                      lambda: super(NativeQuerySet, self).aget(*args, **kwargs))

    async def afirst(self) -> Any:
        return await native_or_thread(self, self.first, super().afirst)

    async def alast(self) -> Any:
        return await native_or_thread(self, self.last, super().alast)

    async def aearliest(self, *fields: Any) -> Any:
        return await native_or_thread(self, lambda: self.earliest(*fields),
                                      lambda: super(NativeQuerySet, self).aearliest(*fields))

    async def alatest(self, *fields: Any) -> Any:
        return await native_or_thread(self, lambda: self.latest(*fields),
                                      lambda: super(NativeQuerySet, self).alatest(*fields))

    async def acount(self) -> int:
        return await native_or_thread(self, self.count, super().acount)

    async def aexists(self) -> bool:
        return await native_or_thread(self, self.exists, super().aexists)

    async def acontains(self, obj: Any) -> bool:
        return await native_or_thread(self, lambda: self.contains(obj),
                                      lambda: super(NativeQuerySet, self).acontains(obj))

    async def aaggregate(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        return await native_or_thread(self, lambda: self.aggregate(*args, **kwargs),
                                      lambda: super(NativeQuerySet, self).aaggregate(*args, **kwargs))

    async def ain_bulk(self, id_list: Any = None, *, field_name: str = "pk") -> dict[Any, Any]:
        return await native_or_thread(self, lambda: self.in_bulk(id_list, field_name=field_name),
                                      lambda: super(NativeQuerySet, self).ain_bulk(id_list, field_name=field_name))
