"""hybridpool's ASGI application: reused request threads, one request per thread at once, and the
lifespan protocol; Django's own handler, called as a server calls it (asgiref's communicator)."""

from __future__ import annotations

import asyncio
import logging
import threading
import weakref
from typing import Any

import pytest
from asgiref.testing import ApplicationCommunicator
from django.conf import settings
from django.db import connections
from django.test import override_settings

import hybridpool
from hybridpool import registry
from hybridpool.asgi import application as asgi_application
from hybridpool.asgi import get_asgi_application
from hybridpool.checks import check_asgiref

from . import asgiviews
from .conftest import GEVENT, server_connections, wait_for

pytestmark = pytest.mark.skipif(GEVENT, reason="asyncio code does not run under gevent monkey-patching")


@pytest.fixture(autouse=True)
def project():
    asgiviews.SEEN.clear()
    with override_settings(ROOT_URLCONF="tests.asgiviews", MIDDLEWARE=["tests.asgiviews.RecordingMiddleware"],
                           ALLOWED_HOSTS=["testserver"]):
        yield
    connections.close_all()


async def get(app: Any, path: str, query: str = "") -> int:
    """GET ``path`` from ``app`` as an ASGI server does; return the status."""
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
             "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": query.encode(),
             "root_path": "", "headers": [(b"host", b"testserver")], "client": ("127.0.0.1", 5000),
             "server": ("testserver", 80)}
    communicator = ApplicationCommunicator(app, scope)
    await communicator.send_input({"type": "http.request", "body": b"", "more_body": False})
    start = await communicator.receive_output(10)
    await communicator.receive_output(10)  # the body
    await communicator.wait(10)
    return start["status"]


def threads_of(request_id: str) -> set[int]:
    return asgiviews.SEEN[request_id]["threads"]


def test_a_request_s_sync_parts_run_on_one_thread_which_later_requests_reuse():
    app = get_asgi_application()

    async def requests() -> None:
        for n in range(5):
            assert await get(app, "/orm/", f"id={n}") == 200

    asyncio.run(requests())
    for n in range(5):  # middleware, two ORM calls and a sync_to_async call: one thread
        assert len(threads_of(str(n))) == 1, asgiviews.SEEN[str(n)]
        assert asgiviews.SEEN[str(n)]["where"] == ["middleware", "sync_to_async"]
    assert len(set().union(*(threads_of(str(n)) for n in range(5)))) == 1  # the same thread, reused


def test_django_s_own_application_makes_a_thread_per_request():
    from django.core.asgi import get_asgi_application as django_application

    app = django_application()

    async def requests() -> None:
        for n in range(3):
            assert await get(app, "/orm/", f"id={n}") == 200

    asyncio.run(requests())
    assert len(set().union(*(threads_of(str(n)) for n in range(3)))) == 3  # what the reuse saves


def _never_shared(ids: range) -> None:
    """Each request ran on one thread, and no two in flight at once on the same one."""
    spans = {n: asgiviews.SEEN[str(n)]["span"] for n in ids}
    for a in ids:
        assert len(threads_of(str(a))) == 1
        for b in ids:
            overlap = spans[a][0] < spans[b][1] and spans[b][0] < spans[a][1]
            if a < b and overlap:  # in flight together: never one thread for both
                assert not threads_of(str(a)) & threads_of(str(b))


def test_requests_beyond_the_kept_threads_wait_for_one_first_come_first_served():
    app = get_asgi_application(threads=2, thread_timeout=30)  # fewer threads kept than requests in flight

    async def requests() -> None:
        tasks = []
        for n in range(6):  # in this order: each is queued before the next starts
            tasks.append(asyncio.ensure_future(get(app, "/orm/", f"id={n}&sleep=0.2")))
            await asyncio.sleep(0.02)
        assert await asyncio.gather(*tasks) == [200] * 6

    waited = asyncio.run(_timed(requests))
    _never_shared(range(6))
    assert len(set().union(*(threads_of(str(n)) for n in range(6)))) == 2  # only the kept ones
    assert app.threads._made == 2 and len(app.threads._idle) == 2 and app.threads.overflowed == 0
    assert waited >= 0.6  # three rounds of two 0.2 s requests
    # First come, first served, round by round: the two threads given back first go to the two
    # requests queued first. Within a round both threads are handed over at once, so which of
    # the two starts first is up to the OS; across rounds, 0.2 s apart, the order is the queue's.
    starts = [asgiviews.SEEN[str(n)]["span"][0] for n in range(6)]
    rounds = [starts[0:2], starts[2:4], starts[4:6]]
    assert all(max(a) < min(b) for a, b in zip(rounds, rounds[1:])), starts


@pytest.mark.timing
def test_a_request_that_waits_thread_timeout_in_vain_runs_in_a_thread_of_its_own(caplog):
    app = get_asgi_application(threads=1, thread_timeout=0.05)

    async def requests() -> None:
        statuses = await asyncio.gather(*(get(app, "/orm/", f"id={n}&sleep=0.5") for n in range(4)))
        assert statuses == [200] * 4

    with caplog.at_level(logging.WARNING, logger="hybridpool"):
        took = asyncio.run(_timed(requests))
    _never_shared(range(4))
    assert app.threads.overflowed == 3 and app.threads._made == 1
    assert caplog.text.count("waited thread_timeout=0.05 s for one of the 1 request threads") == 1  # once
    assert len(set().union(*(threads_of(str(n)) for n in range(4)))) == 4
    assert took < 1.5  # four 0.5 s requests at once: none waited for another's thread


@pytest.fixture
def pooled_only(monkeypatch):
    """A project whose aliases hybridpool pools, all of them (the test settings have a stock
    alias): Django's request_started receivers need no thread."""
    monkeypatch.setitem(connections.__dict__, "settings", {"default": connections.settings["default"]})


@pytest.fixture
def finished_receiver():
    """A request_finished receiver of the project's own (sync): it records the thread it ran on."""
    from django.core.signals import request_finished

    ran_on: list[int] = []

    def receiver(**kwargs: Any) -> None:
        ran_on.append(threading.get_ident())

    request_finished.connect(receiver)
    yield ran_on
    request_finished.disconnect(receiver)


@pytest.mark.timing
def test_a_request_holds_a_thread_from_its_first_sync_part_only(pooled_only, finished_receiver):
    with override_settings(MIDDLEWARE=[]):  # no sync middleware: Django's response.close() alone
        app = get_asgi_application(threads=1, thread_timeout=30)

    async def requests() -> None:
        statuses = await asyncio.gather(*(get(app, "/nap/", f"id={n}&sleep=0.4") for n in range(4)))
        assert statuses == [200] * 4

    took = asyncio.run(_timed(requests))
    spans = [asgiviews.SEEN[str(n)]["span"] for n in range(4)]
    assert max(start for start, _ in spans) < min(end for _, end in spans)  # all four in flight at once
    assert took < 1.2  # four 0.4 s pauses at once, not one after another behind the one thread
    assert app.threads._made == 1 and app.threads.overflowed == 0 and len(app.threads._idle) == 1
    # The project's receiver made response.close() need the thread: it ran there, four times.
    assert len(finished_receiver) == 4 and set(finished_receiver) == {app.threads._idle[0].thread.ident}


def _record_closes(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, bool]]:
    """Record, for each ``response.close()``, the thread it ran on and whether the request's URLconf
    was reset after it (Django's ``reset_urlconf`` receiver)."""
    from django.http import HttpResponseBase
    from django.urls import get_urlconf, set_urlconf

    closes: list[tuple[int, bool]] = []
    django_close = HttpResponseBase.close

    def close(self: HttpResponseBase) -> None:
        set_urlconf("tests.asgiviews")  # as a middleware setting request.urlconf would
        django_close(self)
        closes.append((threading.get_ident(), get_urlconf() is None))

    monkeypatch.setattr(HttpResponseBase, "close", close)
    return closes


def test_a_request_no_thread_served_closes_its_response_on_the_loop(pooled_only, monkeypatch):
    closes = _record_closes(monkeypatch)
    with override_settings(MIDDLEWARE=[]):
        app = get_asgi_application(threads=2)

    async def requests() -> int:
        assert await asyncio.gather(*(get(app, "/nap/", f"id={n}") for n in range(3))) == [200] * 3
        return threading.get_ident()

    loop_thread = asyncio.run(requests())
    assert app.threads._made == 0  # no request was lent a thread
    assert closes == [(loop_thread, True)] * 3  # each response closed once, on the loop, receivers run


def test_with_async_unsafe_allowed_response_close_takes_a_thread(pooled_only, monkeypatch):
    # The loop's thread may then hold a connection, which the thread's receivers would not close.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    closes = _record_closes(monkeypatch)
    with override_settings(MIDDLEWARE=[]):
        app = get_asgi_application(threads=1)

    async def request() -> int:
        assert await get(app, "/nap/", "id=unsafe") == 200
        return threading.get_ident()

    loop_thread = asyncio.run(request())
    assert app.threads._made == 1 and [thread for thread, _ in closes] == [app.threads._idle[0].thread.ident]
    assert loop_thread != app.threads._idle[0].thread.ident


def test_response_close_takes_a_thread_where_the_loop_would_change_what_runs(pooled_only, monkeypatch,
                                                                                  finished_receiver):
    closes = _record_closes(monkeypatch)
    served = get_asgi_application(threads=1)  # with the sync RecordingMiddleware
    with override_settings(MIDDLEWARE=[]):
        unserved = get_asgi_application(threads=1)

    async def requests() -> int:
        assert await get(served, "/orm/", "id=served") == 200  # a request a thread served: its thread
        assert await get(unserved, "/nap/", "id=receiver") == 200  # no thread, but the project's receiver
        return threading.get_ident()

    loop_thread = asyncio.run(requests())
    assert [thread for thread, _ in closes] == finished_receiver  # each close ran its receivers where it ran
    assert len(finished_receiver) == 2 and loop_thread not in finished_receiver
    assert served.threads._made == 1 and unserved.threads._made == 1
    assert all(reset for _, reset in closes)


def test_a_request_cancelled_while_it_waits_for_a_thread_costs_none():
    app = get_asgi_application(threads=1, thread_timeout=30)

    async def requests() -> None:
        first = asyncio.ensure_future(get(app, "/orm/", "id=first&sleep=0.3"))
        await asyncio.sleep(0.05)
        waiting = asyncio.ensure_future(get(app, "/orm/", "id=gone"))
        await asyncio.sleep(0.05)
        assert len(app.threads._waiting) == 1
        waiting.cancel()  # the server gives up on it while it waits
        with pytest.raises(asyncio.CancelledError):
            await waiting
        assert await first == 200
        assert await get(app, "/orm/", "id=next") == 200  # the one thread was not lost

    asyncio.run(requests())
    assert "gone" not in asgiviews.SEEN
    assert threads_of("first") == threads_of("next")
    assert app.threads._made == 1 and len(app.threads._idle) == 1


async def _timed(coroutine_function: Any) -> float:
    loop = asyncio.get_running_loop()
    started = loop.time()
    await coroutine_function()
    return loop.time() - started


def test_a_request_that_does_not_end_normally_does_not_lend_its_thread_again():
    app = get_asgi_application(threads=1)

    async def requests() -> None:
        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
                 "scheme": "http", "path": "/orm/", "raw_path": b"/orm/", "query_string": b"id=cut&sleep=0.5",
                 "root_path": "", "headers": [(b"host", b"testserver")], "client": ("127.0.0.1", 5000),
                 "server": ("testserver", 80)}
        communicator = ApplicationCommunicator(app, scope)
        await communicator.send_input({"type": "http.request", "body": b"", "more_body": False})
        await asyncio.sleep(0.1)
        waiting = asyncio.ensure_future(get(app, "/orm/", "id=waiting"))  # for the one thread
        await asyncio.sleep(0.05)
        communicator.future.cancel()  # the server drops the request while its thread still runs
        with pytest.raises(asyncio.CancelledError):
            await communicator.future
        assert await waiting == 200
        assert await get(app, "/orm/", "id=next") == 200

    asyncio.run(requests())
    # The waiting request got a fresh thread in its place, not one maybe still busy; so did the next.
    assert not threads_of("cut") & (threads_of("waiting") | threads_of("next"))
    assert app.threads.overflowed == 0 and app.threads._made == 1


def test_the_lifespan_marks_the_server_s_loop_and_closes_the_pools():
    app = get_asgi_application()

    async def lifespan() -> None:
        communicator = ApplicationCommunicator(app, {"type": "lifespan", "asgi": {"version": "3.0"}})
        await communicator.send_input({"type": "lifespan.startup"})
        assert await communicator.receive_output(5) == {"type": "lifespan.startup.complete"}
        assert asyncio.get_running_loop() in registry._serving
        assert await get(app, "/orm/", "id=0") == 200
        await communicator.send_input({"type": "lifespan.shutdown"})
        assert await communicator.receive_output(10) == {"type": "lifespan.shutdown.complete"}
        assert app.threads._idle == []

    pool = hybridpool.get_pool("default")
    asyncio.run(lifespan())
    assert pool.closed and not registry._pools  # every pool of the process closed
    # Their idle connections are closed; the backends are gone before the next test counts its own.
    app = settings.DATABASES["default"]["OPTIONS"]["application_name"]
    assert wait_for(lambda: server_connections(app) <= len(pool.leases))


def test_without_asgiref_3_13_requests_run_as_under_django_and_a_check_says_so(monkeypatch, caplog):
    monkeypatch.setattr(asgi_application, "REUSABLE_THREADS", False)  # as with asgiref 3.12
    with caplog.at_level(logging.WARNING, logger="hybridpool"):
        app = get_asgi_application()
    assert "cannot lend a request thread" in caplog.text
    assert app.threads.size == 0

    async def requests() -> None:
        for n in range(2):
            assert await get(app, "/orm/", f"id={n}") == 200

    asyncio.run(requests())
    assert not threads_of("0") & threads_of("1")
    (warning,) = check_asgiref()
    assert warning.id == "hybridpool.W004"


def test_threads_must_be_a_count_and_thread_timeout_seconds():
    with pytest.raises(ValueError, match=r"get_asgi_application\(\) 'threads' = -1 \(int\): must be an int >= 0"):
        get_asgi_application(threads=-1)
    with pytest.raises(ValueError, match=r"'thread_timeout' = '1' \(str\): must be a number of seconds >= 0"):
        get_asgi_application(thread_timeout="1")


def _receiver(entry: tuple) -> Any:
    """The receiver of one of a signal's ``receivers`` entries (a weak reference or the receiver:
    its second item in Django 5.2 and 6.1, whose entries have three and four items)."""
    ref = entry[1]
    return ref() if isinstance(ref, weakref.ReferenceType) else ref


def _count_django_receivers(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count the runs of Django's request_started receivers in the request thread (they still run)."""
    from hybridpool.asgi import signals

    runs: list[int] = []
    real = signals.django_receivers

    def counted() -> None:
        runs.append(1)
        real()

    monkeypatch.setattr(signals, "django_receivers", counted)
    return runs


def test_request_started_hops_to_the_request_thread_only_when_django_s_receivers_have_work(monkeypatch):
    from django.core.signals import request_started
    from django.db import close_old_connections, reset_queries

    real_settings = connections.settings
    # A project whose aliases hybridpool pools, all of them (the test settings have a stock alias).
    monkeypatch.setitem(connections.__dict__, "settings", {"default": real_settings["default"]})
    app = get_asgi_application(threads=1)
    receivers = [_receiver(entry) for entry in request_started.receivers]
    assert reset_queries not in receivers and close_old_connections not in receivers
    runs = _count_django_receivers(monkeypatch)
    pool = hybridpool.get_pool("default")

    async def requests(*ids: str) -> None:
        for request_id in ids:
            assert await get(app, "/orm/", f"id={request_id}") == 200

    asyncio.run(requests("a", "b", "c"))
    assert runs == []  # nothing to do: no hop
    with override_settings(DEBUG=True):  # connection.queries to empty
        asyncio.run(requests("debug"))
    assert len(runs) == 1
    # A connection the request thread still holds (a request that did not give it back): the next
    # request's start gives it back, in that thread, as Django's receiver would.
    worker = app.threads.take()
    worker.executor.submit(lambda: connections["default"].ensure_connection()).result()  # that thread's wrapper
    app.threads.give_back(worker, reusable=True)
    assert pool.leases.held_by(worker.thread)
    asyncio.run(requests("after-held"))
    assert len(runs) == 2 and not pool.leases.held_by(worker.thread)
    # An alias hybridpool does not pool: Django's receivers check its connection at each request.
    monkeypatch.setitem(connections.__dict__, "settings", real_settings)
    asyncio.run(requests("stock"))
    assert len(runs) == 3


def test_after_the_swap_a_sync_send_of_request_started_still_runs_django_s_receivers(monkeypatch):
    from django.core.signals import request_started
    from django.db import connection

    get_asgi_application()  # installs the async receiver in place of Django's
    runs = _count_django_receivers(monkeypatch)
    connection.ensure_connection()
    request_started.send(sender=None)  # WSGI's and the test client's way: no loop, no request thread
    assert runs == [1] and connection.connection is None  # given back in this thread
