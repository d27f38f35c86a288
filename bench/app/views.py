"""The benchmark's views: one query, five queries, the async ORM, and a transactional write.

Each request reads the next key of a process-wide cycle over the table's rows, so consecutive
requests touch different rows (writes rarely wait on each other's row locks).
"""

from __future__ import annotations

import itertools
import os

from django.db import transaction
from django.db.models import F
from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from .inflight import in_flight
from .models import ROWS, Item

_keys = itertools.count()


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
    """One query through the async ORM (under ASGI: a ``sync_to_async`` thread runs it)."""
    return JsonResponse(item_json(await Item.objects.aget(pk=next_key())))


@csrf_exempt  # wrk posts without a CSRF token
@require_POST
def write(request: HttpRequest) -> JsonResponse:
    """A transaction: lock an item (``SELECT ... FOR UPDATE``), increment its hits, commit."""
    with transaction.atomic():
        item = Item.objects.select_for_update().get(pk=next_key())
        Item.objects.filter(pk=item.pk).update(hits=F("hits") + 1)
    return JsonResponse({"id": item.id})


def stats(request: HttpRequest) -> JsonResponse:
    """No query: which engine and process serve, and the requests in flight (this one included);
    the driver waits for this to answer 200 before a load, and for in_flight 1 after a warm-up."""
    return JsonResponse({"engine": os.environ.get("BENCH_ENGINE"), "pid": os.getpid(), "in_flight": in_flight()})
