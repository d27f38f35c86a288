"""Where the metrics are scraped: a Django view and an ASGI route, both answering what
:func:`hybridpool.metrics.prometheus.exposition` returns (every process's metrics in
prometheus_client's multiprocess mode).

.. code-block:: python

    # urls.py
    from hybridpool.metrics.views import metrics
    urlpatterns = [path("metrics", metrics), ...]

    # asgi.py: /metrics answered before Django, on the event loop's side
    from hybridpool.metrics.views import MetricsRoute
    application = MetricsRoute(get_asgi_application())
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from django.http import HttpRequest, HttpResponse
from django.views.decorators.http import require_GET

from .prometheus import exposition

__all__ = ["metrics", "MetricsRoute"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


@require_GET
def metrics(request: HttpRequest) -> HttpResponse:
    """GET: the pools' metrics (and the rest of prometheus_client's registry) in Prometheus' text
    format, or OpenMetrics if the ``Accept`` header asks for it. A sync view: under ASGI, Django
    runs it in a thread."""
    body, content_type = exposition(request.headers.get("Accept"))
    return HttpResponse(body, content_type=content_type)


class MetricsRoute:
    """An ASGI application answering ``GET path`` with the metrics, and handing every other
    request (and the lifespan protocol) to ``app``; without ``app``, other requests get 404.

    The scrape's reading and formatting run in a thread (``asyncio.to_thread``), off the loop.

    :param app: the ASGI application of everything else (e.g. ``hybridpool.asgi.get_asgi_application()``).
    :param path: the route, default ``/metrics``.
    """

    def __init__(self, app: ASGIApp | None = None, path: str = "/metrics") -> None:
        self.app = app
        self.path = path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].rstrip("/") == self.path.rstrip("/"):
            if scope["method"] not in ("GET", "HEAD"):
                await _answer(send, 405, b"method not allowed\n", "text/plain; charset=utf-8", [(b"allow", b"GET")])
                return
            accept = next((value.decode("latin-1") for name, value in scope.get("headers", ())
                           if name.lower() == b"accept"), None)
            body, content_type = await asyncio.to_thread(exposition, accept)
            await _answer(send, 200, b"" if scope["method"] == "HEAD" else body, content_type)
        elif self.app is not None:
            await self.app(scope, receive, send)
        elif scope["type"] == "http":
            await _answer(send, 404, b"not found\n", "text/plain; charset=utf-8")
        elif scope["type"] == "lifespan":  # alone, nothing to set up
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})


async def _answer(send: Send, status: int, body: bytes, content_type: str,
                  headers: list[tuple[bytes, bytes]] | None = None) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", content_type.encode("latin-1")), *(headers or [])]})
    await send({"type": "http.response.body", "body": body})
