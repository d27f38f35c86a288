"""ASGI lifespan for Django: close the process's pools when the server shuts down.

uvicorn ends its process by re-raising the SIGTERM or SIGINT it received once it has finished
serving, and a process killed by SIGTERM runs no ``atexit`` hook: the kernel closes the pooled
sockets and PostgreSQL sees each connection end without a terminate message. The ASGI lifespan
protocol is the server's way to tell the application it stops, but Django's ASGI handler refuses
it (it serves only ``http``). :func:`get_asgi_application` adds it: use it in ``asgi.py`` instead of
Django's (uvicorn's default ``--lifespan auto`` sends the events).

Source: the ASGI lifespan specification, https://asgi.readthedocs.io/en/latest/specs/lifespan.html
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

logger = logging.getLogger("hybridpool")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]], Awaitable[None]]


class Lifespan:
    """Wrap an ASGI application: answer ``lifespan`` events, pass everything else to ``app``.

    At ``lifespan.shutdown`` the pools of this process are closed (:func:`hybridpool.registry.aclose_all`),
    each connection with a terminate message, before the server exits.

    :param app: the ASGI application, e.g. Django's ``ASGIHandler``.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Callable[[], Awaitable[Message]],
                       send: Callable[[Message], Awaitable[None]]) -> None:
        if scope["type"] != "lifespan":
            return await self.app(scope, receive, send)
        from .. import registry

        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                registry.serving(asyncio.get_running_loop())
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                try:
                    await registry.aclose_all()
                except Exception as ex:  # the server still shuts down; say why a pool did not close
                    logger.exception("closing the pools at shutdown failed")
                    await send({"type": "lifespan.shutdown.failed", "message": str(ex)})
                else:
                    await send({"type": "lifespan.shutdown.complete"})
                return


def get_asgi_application() -> Lifespan:
    """Django's ASGI application (``django.core.asgi.get_asgi_application()``) with the lifespan
    protocol: its pools are closed when the server shuts down. Use it in ``asgi.py``."""
    from django.core.asgi import get_asgi_application as django_application

    return Lifespan(django_application())
