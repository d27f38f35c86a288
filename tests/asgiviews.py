"""Views and middleware for the ASGI application's tests (``tests/test_asgi.py``): each records the
threads that ran the request's sync parts."""

from __future__ import annotations

import asyncio
import itertools
import threading
import time

from asgiref.sync import sync_to_async
from django.db import transaction
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import path

from tests.testapp.models import Item

#: request id -> the threads that ran its sync parts, and when it ran (monotonic s).
SEEN: dict[str, dict] = {}

#: A thread's own mark, kept in its thread-local storage: a thread reused keeps it, a new one
#: (even one the system gives an ended thread's ident) gets another.
_local = threading.local()
_marks = itertools.count()


def _thread_mark() -> int:
    if not hasattr(_local, "mark"):
        _local.mark = next(_marks)
    return _local.mark


def _note(request: HttpRequest, where: str) -> None:
    entry = SEEN.setdefault(request.GET.get("id", "?"), {"threads": set(), "where": []})
    entry["threads"].add(_thread_mark())
    entry["where"].append(where)


class RecordingMiddleware:
    """A sync middleware: Django runs it in the request's thread."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        _note(request, "middleware")
        return self.get_response(request)


@transaction.non_atomic_requests(using="atomic")  # the test settings' ATOMIC_REQUESTS alias
async def orm(request: HttpRequest) -> JsonResponse:
    """Two async ORM calls (each a sync_to_async hop), a sync call in between, a pause."""
    started = time.monotonic()
    await Item.objects.filter(name="asgi").acount()
    await sync_to_async(_note)(request, "sync_to_async")
    await Item.objects.filter(name="asgi").aexists()
    await sync_to_async(time.sleep)(float(request.GET.get("sleep", "0")))
    entry = SEEN[request.GET.get("id", "?")]
    entry["span"] = (started, time.monotonic())
    return JsonResponse({"threads": len(entry["threads"])})


@transaction.non_atomic_requests(using="atomic")
async def nap(request: HttpRequest) -> HttpResponse:
    """No sync part but Django's own (``response.close()``): an async pause, then a response."""
    started = time.monotonic()
    await asyncio.sleep(float(request.GET.get("sleep", "0")))
    SEEN[request.GET.get("id", "?")] = {"span": (started, time.monotonic())}
    return HttpResponse("ok")


def sync_view(request: HttpRequest) -> HttpResponse:
    _note(request, "view")
    return HttpResponse("ok")


urlpatterns = [path("orm/", orm), path("nap/", nap), path("sync/", sync_view)]
