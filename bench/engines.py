"""The database engines the end-to-end benchmark compares, as Django ``DATABASES`` entries.

Every pooled engine is capped at the same number of server connections (``max_size``, default 20)
and waits at most :data:`POOL_TIMEOUT` seconds for one; every connection carries the server's own
``application_name``, so the driver can count that server's sessions in ``pg_stat_activity``.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ImproperlyConfigured

from hybridpool.embedded import django_settings

#: Django's stock PostgreSQL backend.
DJANGO = "django.db.backends.postgresql"
GEVENTPOOL = "django_db_geventpool.backends.postgresql_psycopg3"

#: Connections a pool opens at start and keeps (hybridpool and Django's pool alike).
MIN_SIZE = 5
#: Longest wait for a pooled connection (s), hybridpool and Django's pool alike.
POOL_TIMEOUT = 10.0

#: The engines, in the order of a round; the others' ratios are to :data:`BASELINE`'s.
ENGINES = ("hybridpool", "hybridpool-rollback", "hybridpool-asgi", "hybridpool-native", "builtin", "geventpool",
           "max-age-0", "max-age-none")
BASELINE = "builtin"
#: The zero-pool-overhead reference: one connection kept per thread or greenlet.
REFERENCE = "max-age-none"
#: Engines served by hybridpool's ASGI application (``hybridpool.asgi.get_asgi_application()``,
#: :mod:`bench.app.hybrid_asgi`, uvicorn ``--lifespan on``); the others by Django's own
#: (:mod:`bench.app.asgi`), the built-in pool always.
HYBRID_ASGI = frozenset({"hybridpool-asgi", "hybridpool-native"})
#: Engines whose async views read through ``hybridpool.NativeQuerySet`` (the model's ``native``
#: manager) instead of Django's ``objects``.
NATIVE = frozenset({"hybridpool-native"})
#: Engines that run only under some servers.
ONLY_ON = {"geventpool": ("gevent",), "hybridpool-asgi": ("uvicorn",), "hybridpool-native": ("uvicorn",)}


def runs_on(engine: str, server: str) -> bool:
    """True if ``engine`` can serve under ``server`` (django-db-geventpool needs gevent, hybridpool's
    ASGI application an ASGI server)."""
    return server in ONLY_ON.get(engine, (server,))


def database(engine: str, conninfo: str, application_name: str, max_size: int) -> dict[str, Any]:
    """Return the ``DATABASES`` entry of ``engine`` on ``conninfo``.

    :param engine: one of :data:`ENGINES`: ``hybridpool`` (default ``reset="safe"``),
        ``hybridpool-rollback`` (``reset="rollback"``), ``hybridpool-asgi`` and
        ``hybridpool-native`` (as ``hybridpool``: they differ by application and views), ``builtin`` (Django's ``OPTIONS["pool"]``),
        ``geventpool`` (django-db-geventpool, ``MAX_CONNS``), ``max-age-0`` (a new connection per
        request), ``max-age-none`` (``CONN_MAX_AGE=None``: one connection per thread or greenlet).
    :param max_size: the pools' cap on server connections.
    :raises ImproperlyConfigured: for an unknown engine (setting ``BENCH_ENGINE``).
    """
    options: dict[str, Any] = {"application_name": application_name}
    pool = {"min_size": min(MIN_SIZE, max_size), "max_size": max_size, "timeout": POOL_TIMEOUT}
    entries: dict[str, dict[str, Any]] = {
        "hybridpool": {"OPTIONS": {**options, "pool": pool}},
        "hybridpool-rollback": {"OPTIONS": {**options, "pool": {**pool, "reset": "rollback"}}},
        "hybridpool-asgi": {"OPTIONS": {**options, "pool": pool}},
        "hybridpool-native": {"OPTIONS": {**options, "pool": pool}},
        "builtin": {"ENGINE": DJANGO, "OPTIONS": {**options, "pool": pool}},
        "geventpool": {"ENGINE": GEVENTPOOL, "OPTIONS": {**options, "MAX_CONNS": max_size, "REUSE_CONNS": max_size}},
        "max-age-0": {"ENGINE": DJANGO, "OPTIONS": options},
        "max-age-none": {"ENGINE": DJANGO, "CONN_MAX_AGE": None, "OPTIONS": options},
    }
    if engine not in entries:
        raise ImproperlyConfigured(f"BENCH_ENGINE = {engine!r} is not an engine of the benchmark; use one of {ENGINES}")
    return django_settings(conninfo, **entries[engine])
