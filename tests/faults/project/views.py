"""Sync views: under gunicorn's gevent worker each request is a greenlet served by the green
pool; under uvicorn each runs in a ``sync_to_async`` thread served by the thread driver."""

import os
import sys
import threading

from django.db import connection
from django.http import HttpRequest, JsonResponse

import hybridpool

#: What ``/dirty/`` leaves in its session; ``/state/`` reports each of them.
DIRTY = [
    "SET ROLE {role}",
    "SET search_path TO pg_catalog",
    "SET statement_timeout = '4321s'",
    "SELECT pg_advisory_lock(4242)",
    "CREATE TEMP TABLE leftover (id int)",
    "LISTEN leftover",
    "BEGIN",
    "DECLARE leftover CURSOR WITH HOLD FOR SELECT 1",
    "COMMIT",
    "PREPARE leftover AS SELECT 1",
]

STATE = """
SELECT pg_backend_pid(), current_user, session_user, current_setting('search_path'),
       current_setting('statement_timeout'),
       (SELECT count(*) FROM pg_locks WHERE pid = pg_backend_pid() AND locktype = 'advisory'),
       (SELECT count(*) FROM pg_class WHERE relpersistence = 't'
           AND relnamespace = pg_my_temp_schema()),
       (SELECT count(*) FROM pg_listening_channels()),
       (SELECT count(*) FROM pg_cursors),
       (SELECT count(*) FROM pg_prepared_statements WHERE name NOT LIKE '\\_pg3\\_%%')
"""
STATE_KEYS = ["backend", "current_user", "session_user", "search_path", "statement_timeout", "advisory_locks",
              "temp_tables", "listening", "cursors", "prepared"]


def _backend() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return cursor.fetchone()[0]


def query(request: HttpRequest) -> JsonResponse:
    """One query: the server connection's backend pid and this worker's pid."""
    wsgi = sys.modules.get(f"{__package__}.wsgi")
    return JsonResponse({"backend": _backend(), "worker": os.getpid(),
                         "preloaded_backend": getattr(wsgi, "PRELOADED_BACKEND", None)})


async def araw(request: HttpRequest) -> JsonResponse:
    """An async view on ``hybridpool.aconnection()`` (the event loop's pool; ASGI only)."""
    async with hybridpool.aconnection() as conn:
        cursor = await conn.execute("SELECT pg_backend_pid()")
        (backend,) = await cursor.fetchone()
    return JsonResponse({"backend": backend})


def sleep(request: HttpRequest) -> JsonResponse:
    """Hold a connection on the server for ``?s=`` seconds (at most 5)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_sleep(%s)", [min(float(request.GET.get("s", "0.5")), 5.0)])
    return JsonResponse({"backend": _backend()})


def dirty(request: HttpRequest) -> JsonResponse:
    """Leave every kind of session state behind: role, GUCs, lock, temp table, LISTEN, cursor, statement."""
    with connection.cursor() as cursor:
        for statement in DIRTY:
            cursor.execute(statement.format(role=os.environ["FAULTS_ROLE"]))
    return JsonResponse({"backend": _backend()})


def state(request: HttpRequest) -> JsonResponse:
    """The session state of the connection this request got."""
    with connection.cursor() as cursor:
        cursor.execute(STATE)
        return JsonResponse(dict(zip(STATE_KEYS, cursor.fetchone())))


def stray(request: HttpRequest) -> JsonResponse:
    """Start a thread (a greenlet under gevent) that runs an ORM query and ends without closing
    its connection, as code that forgets does."""
    threading.Thread(target=_backend).start()
    return JsonResponse({"started": True})


def stats(request: HttpRequest) -> JsonResponse:
    """The stats of the pool serving this request's ORM calls."""
    return JsonResponse({"orm": hybridpool.get_pool().get_stats()})
