"""Sync views: under gunicorn's gevent worker each request is a greenlet served by the green pool.

Each answer names the server that served it: ``port`` (``inet_server_port()``), ``in_recovery``
(``pg_is_in_recovery()``) and ``lent_port``, the port of the node the lent connection is connected
to as libpq knows it (``conn.info.port``: with a multi-host ``PORT``, the node libpq picked), read
before any statement is sent on it, and ``lent_at``, when the pool lent it (:func:`lent_at`).
"""

import time
from typing import Any

from django.db import DatabaseError, connection, connections, transaction
from django.http import HttpRequest, JsonResponse

import hybridpool

from .models import Write

SERVER = "SELECT inet_server_port(), pg_is_in_recovery()"
ALIASES = ("default", "replica")


def lent_at(wrapper: Any) -> float:
    """When the pool lent the connection of Django's ``wrapper``: its lease's ``time.monotonic()``
    (``CLOCK_MONOTONIC``: one clock for the test's process and the server's)."""
    lease = wrapper.pool.leases._leases.get(id(wrapper.connection))
    return lease.lent_at if lease is not None else time.monotonic()


def _server(cursor: Any) -> dict[str, Any]:
    cursor.execute(SERVER)
    port, in_recovery = cursor.fetchone()
    return {"port": port, "in_recovery": in_recovery}


def write(request: HttpRequest) -> JsonResponse:
    """One transactional write (the router sends it to ``default``): the row's id and its server.

    A connection that cannot be had within the pool's ``timeout`` raises, and the middleware
    answers 503; a write that fails on a lent connection answers 500 with that connection's port.
    """
    connection.ensure_connection()
    lent = {"lent_port": connection.connection.info.port, "lent_at": lent_at(connection)}
    try:
        with transaction.atomic():
            row = Write.objects.create(worker=int(request.GET.get("w", "0")))
            with connection.cursor() as cursor:
                server = _server(cursor)
    except DatabaseError as ex:
        return JsonResponse({"error": f"{type(ex).__name__}: {ex}", **lent}, status=500)
    return JsonResponse({"id": row.id, **lent, **server})


def read(request: HttpRequest) -> JsonResponse:
    """One read through the router (``replica``): a count, and the server that answered it."""
    replica = connections["replica"]
    replica.ensure_connection()
    lent = {"lent_port": replica.connection.info.port, "lent_at": lent_at(replica)}
    count = Write.objects.count()
    with replica.cursor() as cursor:
        server = _server(cursor)
    return JsonResponse({"count": count, **lent, **server})


def _pool_state(alias: str) -> dict[str, Any]:
    pool = hybridpool.get_pool(alias)
    return {"idle_ports": sorted(conn.info.port for conn in pool._pool),
            "lent_ports": sorted(conn.info.port for conn in pool.leases.lent()),
            "stats": pool.get_stats()}


def pool(request: HttpRequest) -> JsonResponse:
    """What each pool holds, without lending anything: the ports of its idle and lent connections."""
    return JsonResponse({alias: _pool_state(alias) for alias in ALIASES})


def sweep(request: HttpRequest) -> JsonResponse:
    """Borrow ``max_size`` connections of ``default`` at once (every connection the pool may
    hold), ask each its server, give them back; then what the pools hold."""
    pool = hybridpool.get_pool("default")
    held: list[Any] = []
    borrowed: list[Any] = []
    try:
        for _ in range(pool.max_size):
            borrowed.append(pool.getconn())
        for conn in borrowed:
            with conn.cursor() as cursor:
                held.append({"lent_port": conn.info.port, **_server(cursor)})
    finally:
        for conn in borrowed:
            pool.putconn(conn)
    return JsonResponse({"held": held, **{alias: _pool_state(alias) for alias in ALIASES}})


def stats(request: HttpRequest) -> JsonResponse:
    """The stats of the pools (the readiness probe of ``examples.run.serving``)."""
    return JsonResponse({alias: hybridpool.get_pool(alias).get_stats() for alias in ALIASES})
