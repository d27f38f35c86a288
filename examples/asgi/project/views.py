"""Async views: the async ORM (whose queries run in threads served by hybridpool's thread pool)
and raw SQL on a :class:`psycopg.AsyncConnection` from hybridpool's pool for this event loop."""

from asgiref.sync import sync_to_async
from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_http_methods
from psycopg import sql

import hybridpool
from examples.common.notes.actions import NOTES_COUNTER, increment, note_fields, note_json
from examples.common.notes.models import Note


@csrf_exempt  # the load script posts without a CSRF token
@require_http_methods(["GET", "POST"])
async def notes(request: HttpRequest) -> JsonResponse:
    """GET: the number of notes, the newest and the 10 latest. POST: create a note (JSON body
    with ``title`` and ``body``), then increment the notes counter in a transaction."""
    if request.method == "POST":
        note = await Note.objects.acreate(**note_fields(request.body))
        # transaction.atomic is sync-only: the whole transaction runs in one sync_to_async call.
        count = await sync_to_async(increment)(NOTES_COUNTER)
        return JsonResponse({"note": note_json(note), "counter": count}, status=201)
    latest = Note.objects.order_by("-id")
    newest = await latest.afirst()
    return JsonResponse({
        "count": await Note.objects.acount(),
        "newest": newest.id if newest else None,
        "latest": [note_json(note) async for note in latest[:10]],
    })


@require_GET
async def raw(request: HttpRequest) -> JsonResponse:
    """Count the notes with raw SQL on a connection of the event loop's async pool."""
    query = sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(Note._meta.db_table))
    async with hybridpool.aconnection() as aconn:
        cursor = await aconn.execute(query)
        (count,) = await cursor.fetchone()
    return JsonResponse({"count": count})


def orm_pool_stats() -> dict[str, int]:
    """The stats of the pool serving the ORM: called in a sync_to_async thread, as ORM code is."""
    return hybridpool.get_pool("default").get_stats()


@require_GET
async def stats(request: HttpRequest) -> JsonResponse:
    """The stats of both pools of this process: the ORM's (threads) and this event loop's."""
    async_pool = await hybridpool.aget_pool("default")
    return JsonResponse({"orm": await sync_to_async(orm_pool_stats)(), "async": async_pool.get_stats()})
