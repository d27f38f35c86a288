"""Several databases, each with its own pool and settings; a router; Django's close helpers."""

from __future__ import annotations

from django.core.signals import request_finished, request_started
from django.db import connections
from django.test import override_settings

import hybridpool
from tests.testapp.models import Item

from .conftest import wait_for


class ReplicaRouter:
    """Reads from "replica", writes to "default" (the same database here)."""

    def db_for_read(self, model, **hints):
        return "replica"

    def db_for_write(self, model, **hints):
        return "default"


def in_use(alias: str) -> int:
    stats = hybridpool.get_pool(alias).get_stats()
    return stats["pool_size"] - stats["pool_available"]


@override_settings(DATABASE_ROUTERS=[f"{__name__}.ReplicaRouter"])
def test_router_sends_reads_and_writes_to_each_alias_s_own_pool():
    Item.objects.create(name="routed")
    assert Item.objects.filter(name="routed").count() == 1
    assert connections["default"].connection is not None and connections["replica"].connection is not None
    assert connections["default"].connection._pool is hybridpool.get_pool("default")
    assert connections["replica"].connection._pool is hybridpool.get_pool("replica")
    assert (hybridpool.get_pool("default").max_size, hybridpool.get_pool("replica").max_size) == (4, 2)
    connections.close_all()
    assert connections["default"].connection is None and connections["replica"].connection is None
    assert wait_for(lambda: in_use("default") == in_use("replica") == 0)


def test_request_signals_give_every_alias_s_connection_back():
    request_started.send(sender=None)
    for alias in ("default", "replica"):
        connections[alias].ensure_connection()
    request_finished.send(sender=None)  # close_old_connections() with CONN_MAX_AGE = 0
    assert connections["default"].connection is None and connections["replica"].connection is None
    assert wait_for(lambda: in_use("default") == in_use("replica") == 0)
