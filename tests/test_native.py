"""``NativeQuerySet``: bounded async reads on the event loop give what Django's thread path gives.

Each read runs twice on the same data, natively (on a loop an ASGI application of hybridpool's
serves) and through Django's own ``sync_to_async`` path (``QuerySet``'s method), and the results are
compared value by value, with their types and time zones; the async pool's request count tells
that the native run did run natively.
"""

from __future__ import annotations

import asyncio
import datetime
import decimal
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from django.db import DatabaseError, connections
from django.db.models import Avg, Count, F, Max, Min, Q, QuerySet, Sum, Value
from django.db.models.functions import Coalesce, Lower
from django.test import override_settings

import hybridpool
from hybridpool import registry
from hybridpool import native
from hybridpool.native import NativeQuerySet, why_not_native
from tests.testapp.models import Author, Sample

from .conftest import GEVENT

pytestmark = pytest.mark.skipif(GEVENT, reason="asyncio code does not run under gevent monkey-patching")

PARIS = datetime.timezone(datetime.timedelta(hours=1))


@pytest.fixture(scope="module", autouse=True)
def samples():
    """Committed rows: natively, a read sees only what is committed."""
    ada = Author.objects.create(name="Ada", born=datetime.date(1815, 12, 10))
    bob = Author.objects.create(name="Bob")
    rows = [
        Sample(title="alpha", price=decimal.Decimal("1.500"), ratio=0.25, count=3, flag=True,
               at=datetime.datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=PARIS), day=datetime.date(2026, 1, 2),
               span=datetime.timedelta(hours=1, microseconds=7), key=uuid.uuid4(),
               data={"k": "v", "n": [1, 2.5, None], "d": {"x": True}}, author=ada),
        Sample(title="beta", price=decimal.Decimal("-20.125"), ratio=None, count=0, flag=False,
               at=datetime.datetime(2025, 6, 1, tzinfo=datetime.timezone.utc), day=None, span=None, key=None,
               data=None, author=bob),
        Sample(title="gamma", price=decimal.Decimal("0.001"), ratio=1e-300, count=-7, flag=True,
               at=datetime.datetime(2027, 12, 31, 23, 59, 59, tzinfo=PARIS), day=datetime.date(1999, 12, 31),
               span=datetime.timedelta(days=-3), key=uuid.uuid4(), data=[1, "two", {"three": 3}], author=None),
        Sample(title="gamma", price=decimal.Decimal("99999.999"), ratio=-0.5, count=10**9, flag=False,
               at=datetime.datetime(2026, 7, 1, 12, tzinfo=datetime.timezone.utc), day=datetime.date(2026, 7, 1),
               span=datetime.timedelta(0), key=uuid.uuid4(), data="a JSON string", author=ada),
    ]
    Sample.objects.bulk_create(rows)
    connections.close_all()
    yield
    Sample.objects.all().delete()
    Author.objects.all().delete()
    connections.close_all()


@pytest.fixture(autouse=True)
def close_thread_path_connections():
    """The thread path runs in asgiref's single thread-sensitive executor thread, which lives on:
    its Django connections go back to their pools after each test, as a request's would."""
    yield
    asyncio.run(sync_to_async(connections.close_all)())


def snapshot(value: Any) -> Any:
    """What code can see of a result: model instances as their field values (each with its type
    and, for datetimes, time zone), their cached related objects too; containers element-wise."""
    if isinstance(value, (Sample, Author)):
        fields = {f.attname: snapshot(getattr(value, f.attname)) for f in type(value)._meta.concrete_fields}
        extra = {key: snapshot(item) for key, item in vars(value).items()
                 if not key.startswith("_") and key not in fields}
        related = {name: snapshot(obj) for name, obj in value._state.fields_cache.items()}
        return (type(value).__name__, fields, extra, related, value._state.db, value._state.adding)
    if isinstance(value, dict):
        return {snapshot(key): snapshot(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value), [snapshot(item) for item in value]
    if isinstance(value, datetime.datetime):
        return value, value.tzinfo, value.utcoffset()
    return type(value), value


async def outcome(read: Callable[[], Any]) -> Any:
    """The snapshot of what ``read()`` returns, or of the exception it raises."""
    try:
        return "returned", snapshot(await read())
    except Exception as ex:
        return "raised", type(ex), str(ex).split("\n")[0]


def paths() -> dict[str, int]:
    """How many reads took each path so far."""
    return dict(native.stats)


#: (name, queryset, method, args): each read the matrix compares.
READS: list[tuple[str, Callable[[], QuerySet[Any]], str, tuple[Any, ...]]] = [
    ("get by title", lambda: Sample.objects.all(), "aget", ({"title": "alpha"},)),
    ("get with select_related", lambda: Sample.objects.select_related("author"), "aget", ({"title": "alpha"},)),
    ("get, none", lambda: Sample.objects.all(), "aget", ({"title": "nothing"},)),
    ("get, several", lambda: Sample.objects.all(), "aget", ({"title": "gamma"},)),
    ("get, JSON key", lambda: Sample.objects.all(), "aget", ({"data__k": "v"},)),
    ("get, Decimal", lambda: Sample.objects.all(), "aget", ({"price": decimal.Decimal("-20.125")},)),
    ("get, null FK", lambda: Sample.objects.select_related("author"), "aget", ({"author__isnull": True},)),
    ("first", lambda: Sample.objects.order_by("-at"), "afirst", ()),
    ("first, empty", lambda: Sample.objects.filter(count=12345), "afirst", ()),
    ("first, values", lambda: Sample.objects.values("title", "price", "at", "data", "author__name"), "afirst", ()),
    ("first, values_list flat", lambda: Sample.objects.order_by("price").values_list("price", flat=True), "afirst", ()),
    ("first, annotated", lambda: Sample.objects.annotate(
        lower=Lower("title"), total=F("count") * 2, fallback=Coalesce("ratio", Value(0.0)),
        writer=F("author__name")).order_by("id"), "afirst", ()),
    ("last", lambda: Sample.objects.all(), "alast", ()),
    ("last, dates", lambda: Sample.objects.dates("day", "month"), "alast", ()),
    ("earliest", lambda: Sample.objects.all(), "aearliest", ("at",)),
    ("latest by Meta", lambda: Sample.objects.all(), "alatest", ()),
    ("latest, none", lambda: Sample.objects.filter(title="nothing"), "alatest", ()),
    ("count", lambda: Sample.objects.filter(Q(flag=True) | Q(ratio__lt=0)), "acount", ()),
    ("count, distinct", lambda: Sample.objects.values("title").distinct(), "acount", ()),
    ("exists", lambda: Sample.objects.filter(data__d__x=True), "aexists", ()),
    ("exists, no", lambda: Sample.objects.filter(span__gt=datetime.timedelta(days=10)), "aexists", ()),
    ("aggregate", lambda: Sample.objects.all(), "aaggregate", (Sum("price"), Avg("ratio"), Max("at"), Min("day"),
                                                               Count("author", distinct=True))),
    ("aggregate, empty", lambda: Sample.objects.filter(count=12345), "aaggregate", (Sum("price"),)),
    ("in_bulk", lambda: Sample.objects.all(), "ain_bulk", ()),
    ("contains", lambda: Author.objects.filter(name="Ada"), "acontains", ()),
    ("error from the server", lambda: Sample.objects.extra(where=["no_such_column = 1"]), "acount", ()),
]


@pytest.mark.parametrize(("name", "queryset", "method", "args"), READS, ids=[read[0] for read in READS])
def test_a_native_read_gives_what_the_thread_path_gives(name, queryset, method, args):
    async def compare() -> None:
        registry.serving(asyncio.get_running_loop())
        call_args = args
        if method == "acontains":
            call_args = (await Author.objects.aget(name="Ada"),)
        elif method == "ain_bulk":
            call_args = ([sample.pk async for sample in Sample.objects.all()],)

        def call(cls: type) -> Callable[[], Any]:
            qs = queryset()
            assert isinstance(qs, NativeQuerySet)
            positional = [a for a in call_args if not isinstance(a, dict)]
            keywords = next((a for a in call_args if isinstance(a, dict)), {})
            return lambda: getattr(cls, method)(qs, *positional, **keywords)

        assert why_not_native(queryset()) is None
        before = paths()
        natively = await outcome(call(NativeQuerySet))
        after = paths()
        assert after.get("native", 0) == before.get("native", 0) + 1  # it did run natively
        assert after.get("retried", 0) == before.get("retried", 0) and after.get("thread", 0) == before.get("thread", 0)
        thread = await outcome(call(QuerySet))  # Django's own: sync_to_async
        assert natively == thread
        if name == "error from the server":
            assert natively[0] == "raised" and issubclass(natively[1], DatabaseError)

    asyncio.run(compare())
    connections.close_all()


def test_a_read_takes_the_thread_path_wherever_native_could_change_what_it_sees(monkeypatch):
    qs = Sample.objects.filter(title="alpha")

    async def on_a_loop_no_asgi_application_serves() -> str | None:
        return why_not_native(qs)

    assert "not one an ASGI application" in asyncio.run(on_a_loop_no_asgi_application_serves())

    async def serving(check: Callable[[], Any]) -> Any:
        registry.serving(asyncio.get_running_loop())
        return await check()

    async def under_async_to_sync() -> str | None:
        registry.serving(asyncio.get_running_loop())
        return why_not_native(qs)

    def sync_caller() -> str | None:
        return async_to_sync(under_async_to_sync)()

    assert "async_to_sync" in sync_caller()

    async def in_debug() -> str | None:
        with override_settings(DEBUG=True):
            return why_not_native(qs)

    assert "DEBUG" in asyncio.run(serving(in_debug))

    async def with_an_execute_wrapper() -> str | None:
        with connections["default"].execute_wrapper(lambda execute, *args: execute(*args)):
            return why_not_native(qs)

    assert "execute wrappers" in asyncio.run(serving(with_an_execute_wrapper))

    async def for_update() -> str | None:
        return why_not_native(qs.select_for_update())

    assert "select_for_update" in asyncio.run(serving(for_update))

    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")  # so that the loop's thread can hold a connection

    async def holding_a_connection() -> tuple[str | None, Any, dict[str, int]]:
        connections["default"].ensure_connection()
        try:
            before = paths()
            reason = why_not_native(qs)
            got = await qs.aget()
            after = paths()
            return reason, got.title, {path: after.get(path, 0) - before.get(path, 0)
                                       for path in ("native", "thread", "retried")}
        finally:
            connections["default"].close()

    reason, title, took = asyncio.run(serving(holding_a_connection))
    assert "holds a connection" in reason and title == "alpha" and took == {"native": 0, "thread": 1, "retried": 0}


def test_a_cancelled_native_read_leaves_its_connection_clean_and_the_pool_whole():
    async def cancel_mid_query() -> dict[str, int]:
        registry.serving(asyncio.get_running_loop())
        slow = Sample.objects.extra(where=["pg_sleep(0.5) IS NOT NULL"])
        task = asyncio.create_task(slow.acount())
        await asyncio.sleep(0.1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await Sample.objects.acount() == 4  # served at once, by a clean connection
        pool = await hybridpool.aget_pool("default")
        await asyncio.sleep(0.1)
        return pool.get_stats()

    stats = asyncio.run(cancel_mid_query())
    assert stats["pool_size"] == stats["pool_available"]
