"""The metrics project's views: a query holding a connection, and this process's pool stats."""

import os

from django.db import connection
from django.http import HttpRequest, JsonResponse

from hybridpool import registry


def work(request: HttpRequest) -> JsonResponse:
    """Hold a pooled connection for ``?sleep=`` seconds (default 0.05) in one query."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_sleep(%s)", [float(request.GET.get("sleep", "0.05"))])
    return JsonResponse({"pid": os.getpid()})


def stats(request: HttpRequest) -> JsonResponse:
    """This worker's pid and the stats of its pools (of threads or greenlets: no async pool here)."""
    pools = [pool for alias, driver, pool in registry.pools() if alias == "default"]
    return JsonResponse({"pid": os.getpid(), "stats": [pool.get_stats() for pool in pools]})
