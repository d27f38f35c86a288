"""The tasks: ORM work through the hybridpool ENGINE, each reporting what its process's pool saw.

Every report has the worker process's ``pid``, an identity of its pool (``pool``: the same value
as long as the process keeps the same pool object) and the pool's stats (psycopg_pool's keys:
``connections_num`` counts the connections the pool has opened since it was built).
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from typing import Any

from celery import shared_task
from django.db import connection, transaction
from django.db.models import F

import hybridpool

from .models import Counter, Tick


def _pool_report() -> dict[str, Any]:
    pool = hybridpool.get_pool()
    token = getattr(pool, "celeryproject_token", None)
    if token is None:  # marks the pool object: a rebuilt pool gets a new token
        token = pool.celeryproject_token = uuid.uuid4().hex
    stats = pool.get_stats()
    return {"pid": os.getpid(), "pool": token, "driver": type(pool).__name__, "max_size": pool.max_size,
            "lent": len(pool.leases),
            "pool_size": stats.get("pool_size", 0), "pool_available": stats.get("pool_available", 0),
            "connections_num": stats.get("connections_num", 0)}


@shared_task(name="celeryproject.stats")
def stats() -> dict[str, Any]:
    """The process's pool as it is between tasks (this task takes no connection)."""
    return _pool_report()


@shared_task(name="celeryproject.work")
def work(number: int, helpers: int = 0) -> dict[str, Any]:
    """Write a tick and bump the counter in one transaction, read the tick back; then give the
    connection back and run ``helpers`` threads (greenlets under ``-P gevent``), each with its own
    pooled connection for a block."""
    before = _pool_report()
    with transaction.atomic():
        Tick.objects.create(number=number, pid=os.getpid())
        Counter.objects.filter(pk=1).update(value=F("value") + 1)
    seen = Tick.objects.filter(number=number).count()
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        (backend,) = cursor.fetchone()
    if helpers:
        connection.close()  # back to the pool: never hold one while waiting for code that needs one
        found = []

        @hybridpool.connection()
        def helper() -> None:
            found.append(Tick.objects.filter(number=number).exists())

        threads = [threading.Thread(target=helper) for _ in range(helpers)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        if found != [True] * helpers:
            raise RuntimeError(f"helpers found {found}")
    after = _pool_report()
    return {"number": number, "seen": seen, "backend": backend, "before": before, **after}


@shared_task(name="celeryproject.fill")
def fill(size: int) -> dict[str, Any]:
    """Hold ``size`` pooled connections at once (one per helper thread, greenlet under ``-P
    gevent``), so that the process's pool grows to ``size``; report the pool once they are back."""
    connection.close()
    barrier = threading.Barrier(size, timeout=10)

    @hybridpool.connection()
    def helper() -> None:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        barrier.wait()

    threads = [threading.Thread(target=helper) for _ in range(size)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return _pool_report()


@shared_task(name="celeryproject.forgetful")
def forgetful(number: int) -> dict[str, Any]:
    """Run a thread (a greenlet under ``-P gevent``) that uses the ORM and never gives its
    connection back; report how long after the thread ended its pool stopped lending that
    connection (None: not within 5 s)."""
    taken = []

    def helper() -> None:
        Tick.objects.filter(number=number).exists()
        taken.append(connection.connection)  # this thread's connection, never closed

    thread = threading.Thread(target=helper)
    thread.start()
    thread.join(30)
    del thread
    ended = time.monotonic()
    pool = hybridpool.get_pool()
    reclaimed_after = None
    while time.monotonic() - ended < 5:
        if not any(conn is taken[0] for conn in pool.leases.lent()):
            reclaimed_after = time.monotonic() - ended
            break
        time.sleep(0.01)
    return {"number": number, "reclaimed_after": reclaimed_after, **_pool_report()}
