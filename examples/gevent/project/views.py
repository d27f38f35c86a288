"""Sync views: under gunicorn's gevent worker each request runs in its own greenlet, and Django's
connection for it comes from hybridpool's green pool and goes back when the request ends."""

from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_http_methods

import hybridpool
from examples.common.notes.actions import add_note, note_fields, note_json
from examples.common.notes.models import Note


@csrf_exempt  # the load script posts without a CSRF token
@require_http_methods(["GET", "POST"])
def notes(request: HttpRequest) -> JsonResponse:
    """GET: the number of notes, the newest and the 10 latest. POST: create a note (JSON body
    with ``title`` and ``body``) and increment the notes counter in one transaction."""
    if request.method == "POST":
        return JsonResponse(add_note(**note_fields(request.body)), status=201)
    latest = Note.objects.order_by("-id")
    newest = latest.first()
    return JsonResponse({
        "count": Note.objects.count(),
        "newest": newest.id if newest else None,
        "latest": [note_json(note) for note in latest[:10]],
    })


@require_GET
def stats(request: HttpRequest) -> JsonResponse:
    """The stats of this process's pool for the ORM, under psycopg_pool's keys."""
    return JsonResponse({"orm": hybridpool.get_pool("default").get_stats()})
