"""What both deployments' views do with notes, apart from how they reach the database."""

from __future__ import annotations

import json
from typing import Any

from django.db import transaction

from .models import Counter, Note

#: The counter that every created note increments.
NOTES_COUNTER = "notes"


def note_fields(raw_body: bytes) -> dict[str, str]:
    """Read ``title`` and ``body`` of a new note from a JSON request body (both optional)."""
    data = json.loads(raw_body or b"{}")
    return {"title": str(data.get("title", "untitled"))[:200], "body": str(data.get("body", ""))}


def note_json(note: Note) -> dict[str, Any]:
    """Return ``note`` as JSON-ready data."""
    return {"id": note.id, "title": note.title, "body": note.body, "created": note.created.isoformat()}


@transaction.atomic(savepoint=False)
def increment(name: str) -> int:
    """Add 1 to counter ``name`` (created at 0 if missing) in a transaction; return its new value.

    The row is locked with ``SELECT ... FOR UPDATE``, so concurrent increments queue instead of
    losing updates. Inside an outer ``atomic`` block it joins that transaction.
    """
    counter, _ = Counter.objects.select_for_update().get_or_create(name=name)
    counter.value += 1
    counter.save(update_fields=["value"])
    return counter.value


def add_note(title: str, body: str) -> dict[str, Any]:
    """Create a note and count it, in one transaction; return both as JSON-ready data."""
    with transaction.atomic():
        note = Note.objects.create(title=title, body=body)
        count = increment(NOTES_COUNTER)
    return {"note": note_json(note), "counter": count}
