"""The benchmark's views: one query, five queries, the async ORM, and a transactional write.

Each request reads the next key of a process-wide cycle over the table's rows, so consecutive
requests touch different rows (writes rarely wait on each other's row locks). The async views
(``/async/``, ``/afirst/``) read through :data:`ASYNC_READS`: ``Item.objects``, or
``Item.native`` (``hybridpool.NativeQuerySet``) for the engines of :data:`bench.engines.NATIVE`;
``/native/`` always reads through ``Item.native``.
"""

from __future__ import annotations

import itertools
import os
import sys
import time

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from bench.procstat import process_cpu

from .inflight import in_flight, served
from .models import ROWS, Item

_keys = itertools.count()

#: The manager of the async views, chosen once per process by the engine.
ASYNC_READS = Item.native if settings.BENCH_NATIVE else Item.objects


def next_key() -> int:
    """The next primary key of the cycle 1..ROWS (``next`` on a count is atomic under the GIL)."""
    return next(_keys) % ROWS + 1


def item_json(item: Item) -> dict[str, object]:
    return {"id": item.id, "name": item.name, "hits": item.hits}


def one(request: HttpRequest) -> JsonResponse:
    """One query: an item by primary key."""
    return JsonResponse(item_json(Item.objects.get(pk=next_key())))


def five(request: HttpRequest) -> JsonResponse:
    """Five queries, one after the other, on one connection."""
    return JsonResponse({"items": [item_json(Item.objects.get(pk=next_key())) for _ in range(5)]})


async def async_one(request: HttpRequest) -> JsonResponse:
    """One query through the async ORM (under ASGI: a ``sync_to_async`` thread runs it, or the
    event loop with NativeQuerySet)."""
    return JsonResponse(item_json(await ASYNC_READS.aget(pk=next_key())))


async def afirst(request: HttpRequest) -> JsonResponse:
    """One query through the async ORM: ``filter(pk=...).afirst()`` on :data:`ASYNC_READS`."""
    return JsonResponse(item_json(await ASYNC_READS.filter(pk=next_key()).afirst()))


async def native(request: HttpRequest) -> JsonResponse:
    """``afirst`` through ``Item.native`` whatever the engine (natively only where NativeQuerySet
    can: a hybridpool alias on a loop hybridpool's ASGI application serves)."""
    return JsonResponse(item_json(await Item.native.filter(pk=next_key()).afirst()))


@csrf_exempt  # wrk posts without a CSRF token
@require_POST
def write(request: HttpRequest) -> JsonResponse:
    """A transaction: lock an item (``SELECT ... FOR UPDATE``), increment its hits, commit."""
    with transaction.atomic():
        item = Item.objects.select_for_update().get(pk=next_key())
        Item.objects.filter(pk=item.pk).update(hits=F("hits") + 1)
    return JsonResponse({"id": item.id})


def stats(request: HttpRequest) -> JsonResponse:
    """No query: which engine and process serve, the requests in flight (this one included), the
    requests other than ``/stats/`` started so far and, read at the same instant, the process's CPU
    seconds (``/proc/self/stat``) and monotonic clock, and NativeQuerySet's reads by path
    (``hybridpool.native.stats``: native, thread, retried). The driver waits for this to answer 200
    before a load, and for in_flight 1 after a warm-up; it reads CPU per request from two looks."""
    pid = os.getpid()
    count, cpu, now = served(), process_cpu(pid), time.monotonic()
    native_module = sys.modules.get("hybridpool.native")
    return JsonResponse({"engine": os.environ.get("BENCH_ENGINE"), "pid": pid, "in_flight": in_flight(),
                         "served": count, "cpu_s": cpu, "monotonic": now,
                         "native": dict(native_module.stats) if native_module else {}})
