"""``PoolUnavailableMiddleware``: a request that finds its pool exhausted gets HTTP 503.

A view that waited ``timeout`` seconds for a connection (``PoolTimeout``) or found ``max_waiting``
callers queued (``TooManyRequests``) raises ``django.db.OperationalError``; this middleware turns
it into ``503 Service Unavailable`` with ``Retry-After``, so load balancers and clients back off
instead of seeing a 500. Add it to ``MIDDLEWARE``; it serves sync and async views alike.
"""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.utils.deprecation import MiddlewareMixin

from .pool import PoolTimeout, TooManyRequests


def pool_unavailable(exception: BaseException) -> bool:
    """True if ``exception`` is, or is Django's wrapper of, ``PoolTimeout`` or ``TooManyRequests``."""
    return isinstance(exception, (PoolTimeout, TooManyRequests)) or isinstance(
        exception.__cause__, (PoolTimeout, TooManyRequests))


class PoolUnavailableMiddleware(MiddlewareMixin):
    """Answer ``503`` with ``Retry-After: retry_after`` when the pool has no connection to give.

    :cvar retry_after: seconds a client should wait before trying again (subclass to change).
    """

    retry_after = 1

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if not pool_unavailable(exception):
            return None
        return HttpResponse(
            "The service is busy: no database connection was free. Try again shortly.\n",
            status=503, content_type="text/plain", headers={"Retry-After": str(self.retry_after)},
        )
