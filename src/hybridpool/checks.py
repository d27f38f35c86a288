"""System checks (``manage.py check``): what would make hybridpool misbehave, said before it does.

Registered when this module is imported: by the ENGINE, and at start-up when ``"hybridpool"`` is
in ``INSTALLED_APPS`` (so that ``manage.py check`` sees them before any database is used).

| id | what |
|---|---|
| ``hybridpool.E001`` | ``CONN_MAX_AGE`` is not 0 |
| ``hybridpool.E002`` | a pool setting is wrong |
| ``hybridpool.W001`` | a gevent deployment in which psycopg would block the hub |
| ``hybridpool.W002`` | ``max_size`` x pools x workers exceeds the server's ``max_connections`` (``check --database``; not behind PgBouncer) |
| ``hybridpool.W003`` | ``ATOMIC_REQUESTS`` holds a pooled connection for every whole request |
| ``hybridpool.W004`` | asgiref < 3.13: ``hybridpool.asgi.get_asgi_application()`` cannot reuse request threads |
| ``hybridpool.W005`` | ``pgbouncer="transaction"`` with a setting that needs a session of its own on the server |
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

from django.core import checks
from django.core.exceptions import ImproperlyConfigured
from django.db import connections

from .config import PoolConfig
from .runtime import gevent_blocking

ENGINES = ("hybridpool.backends.postgresql", "hybridpool.backends.postgis")

#: The environment variable gunicorn and uvicorn read their worker count from.
WORKERS_VARIABLE = "WEB_CONCURRENCY"

#: The pools a process can hold per alias, each up to ``max_size`` connections: the ORM's (the
#: green or the psycopg_pool driver), and the event loops' pools for ``aconnection()``, which
#: share one ``max_size`` however many loops the process runs.
POOLS_PER_PROCESS = 2


def _pooled_databases(aliases: Any = None) -> Iterator[tuple[str, dict[str, Any]]]:
    for alias, entry in connections.settings.items():
        if entry["ENGINE"] in ENGINES and (aliases is None or alias in aliases):
            yield alias, entry


@checks.register("hybridpool")
def check_settings(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """E001, E002, W001 and W003: the settings, with no database access."""
    messages: list[checks.CheckMessage] = []
    drivers = set()
    for alias, entry in _pooled_databases():
        if entry["CONN_MAX_AGE"] != 0:
            messages.append(checks.Error(
                f"DATABASES[{alias!r}]['CONN_MAX_AGE'] = {entry['CONN_MAX_AGE']!r}: must be 0 with {entry['ENGINE']!r}",
                hint="The pool keeps connections open and lends one per request; a persistent connection per"
                     " thread or greenlet is what it replaces. Set CONN_MAX_AGE to 0.",
                id="hybridpool.E001",
            ))
        try:
            config = PoolConfig.from_django(entry["OPTIONS"], alias=alias, health_checks=entry["CONN_HEALTH_CHECKS"])
        except ImproperlyConfigured as ex:
            messages.append(checks.Error(str(ex), hint="See hybridpool's settings reference (docs/settings.md).",
                                         id="hybridpool.E002"))
            continue
        drivers.add(config.driver)
        if entry["ATOMIC_REQUESTS"]:
            messages.append(checks.Warning(
                f"DATABASES[{alias!r}]['ATOMIC_REQUESTS'] = True: every request holds a pooled connection from"
                f" its start to its end, the time spent outside the database included, so at most"
                f" max_size={config.max_size} requests run at once per process",
                hint="Wrap only the database work in transaction.atomic(), or size max_size for the requests"
                     " that run at once.",
                id="hybridpool.W003",
            ))
        if config.pgbouncer == "transaction":
            messages.extend(_transaction_pooling_warnings(alias, entry))
    if drivers and (reason := gevent_blocking(forced="gevent" in drivers)):
        messages.append(checks.Warning(reason, hint=(
            "Monkey-patch the process before anything imports psycopg or Django: gunicorn's gevent worker"
            " does it when preload_app is off; in a script, call gevent.monkey.patch_all() first."),
            id="hybridpool.W001"))
    return messages


def _transaction_pooling_warnings(alias: str, entry: dict[str, Any]) -> list[checks.CheckMessage]:
    """W005: the settings of ``alias`` that break behind PgBouncer's transaction pooling, where
    each transaction may run on another server connection: what one statement leaves in the session
    (a cursor, a prepared statement, a role) is not there for the next. Only what the settings say
    is checked; a ``SET`` in a ``configure`` callback or in the code is not seen (see
    docs/deploy/pgbouncer.md)."""
    where = f"DATABASES[{alias!r}]"
    options = entry["OPTIONS"]
    found: list[tuple[str, str]] = []
    if not entry.get("DISABLE_SERVER_SIDE_CURSORS"):
        found.append((
            (f"{where}['DISABLE_SERVER_SIDE_CURSORS'] is not True: QuerySet.iterator() declares a server-side"
             " cursor WITH HOLD and fetches from it in later transactions, which may run on another server"
             " connection (cursor does not exist)"),
            "Set DISABLE_SERVER_SIDE_CURSORS = True (Django's setting for transaction pooling).",
        ))
    threshold = options.get("prepare_threshold", 5)  # psycopg's default
    if options.get("server_side_binding") is True and threshold is not None:
        found.append((
            (f"{where}['OPTIONS']['server_side_binding'] = True with prepare_threshold = {threshold!r}: psycopg"
             " prepares a statement it runs often on the server connection of one transaction and executes"
             " it by name in later ones (prepared statement does not exist)"),
            ("Set OPTIONS['prepare_threshold'] = None, or use PgBouncer >= 1.21 with max_prepared_statements > 0"
             " (the default from 1.24), which prepares them on each server connection."),
        ))
    if role := options.get("assume_role"):
        found.append((
            (f"{where}['OPTIONS']['assume_role'] = {role!r}: Django sets the role with SET ROLE at each checkout,"
             " on one server connection; the next transactions may run on others, without it, and other"
             " clients inherit it"),
            "Connect as that role (USER), or declare pgbouncer='session'.",
        ))
    return [checks.Warning(f"{msg} (OPTIONS['pool']['pgbouncer'] = 'transaction')", hint=hint, id="hybridpool.W005")
            for msg, hint in found]


@checks.register("hybridpool")
def check_asgiref(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """W004: an asgiref that cannot lend a request thread to Django's handler."""
    from .asgi.application import REUSABLE_THREADS, _asgiref_version

    if REUSABLE_THREADS or not any(True for _ in _pooled_databases()):
        return []
    return [checks.Warning(
        f"asgiref {_asgiref_version()} cannot lend a request thread (ThreadSensitiveContext(executor=...) is"
        " asgiref 3.13's): under hybridpool.asgi.get_asgi_application() each request gets a thread of its"
        " own, as under Django",
        hint="pip install 'asgiref>=3.13'; this matters only under an ASGI server.",
        id="hybridpool.W004",
    )]


@checks.register(checks.Tags.database)
def check_server_capacity(app_configs: Any = None, databases: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """W002, with ``check --database``: the pools of every worker fit the server's connections."""
    messages: list[checks.CheckMessage] = []
    try:
        workers = max(int(os.environ.get(WORKERS_VARIABLE, "1")), 1)
    except ValueError:
        workers = 1
    for alias, entry in _pooled_databases(databases or ()):
        try:
            config = PoolConfig.from_django(entry["OPTIONS"], alias=alias)
        except ImproperlyConfigured:
            continue  # E002 says it
        if config.pgbouncer is not None:
            continue  # the pools connect to PgBouncer, whose pool_size bounds the server connections
        with connections[alias].cursor() as cursor:
            cursor.execute("SELECT current_setting('max_connections')::int,"
                           " current_setting('superuser_reserved_connections')::int")
            max_connections, reserved = cursor.fetchone()
        connections[alias].close()
        most = config.sizes[1] * POOLS_PER_PROCESS * workers
        if most > max_connections - reserved:
            messages.append(checks.Warning(
                f"DATABASES[{alias!r}]: max_size={config.max_size} x {POOLS_PER_PROCESS} pools per process x"
                f" {workers} worker processes ({WORKERS_VARIABLE}) = {most} connections, more than the server's"
                f" max_connections={max_connections} less {reserved} reserved",
                hint="Lower max_size or the workers, or raise max_connections. A process has two pools per"
                     " alias, each up to max_size: the ORM's, and the one its event loops share for"
                     " hybridpool.aconnection().",
                id="hybridpool.W002",
            ))
    return messages
