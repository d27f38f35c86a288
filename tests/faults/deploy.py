"""The fault suite's deployments: the project in ``tests/faults/project`` served by a real gunicorn
(gevent worker) or uvicorn process on 127.0.0.1, on a database of the fault server."""

from __future__ import annotations

import asyncio
import os
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import aiohttp

from examples.run import Server, free_port, serving

ROOT = Path(__file__).resolve().parents[2]
PROJECT = Path(__file__).resolve().parent / "project"
BIN = Path(sys.executable).parent

COMMANDS = {
    "gevent": [str(BIN / "gunicorn"), "-c", str(PROJECT / "gunicorn.conf.py"), "tests.faults.project.wsgi"],
    "asgi": [str(BIN / "uvicorn"), "tests.faults.project.asgi:application", "--host", "127.0.0.1",
             "--port", "{port}", "--workers", "{workers}", "--no-access-log", "--lifespan", "on"],
    # Django's own asgi.py, and uvicorn's default --lifespan auto (which Django's handler refuses).
    "asgi-django": [str(BIN / "uvicorn"), "tests.faults.project.django_asgi:application", "--host", "127.0.0.1",
                    "--port", "{port}", "--workers", "{workers}", "--no-access-log"],
}
KINDS = list(COMMANDS)
#: Longest a request of :func:`hammer` may take (s).
REQUEST_SECONDS = 20.0


@contextmanager
def deployment(kind: str, conninfo: str, role: str, **settings: Any) -> Iterator[Server]:
    """Serve the project with ``kind`` (one of :data:`KINDS`) on database ``conninfo``.

    :param settings: ``max_size``, ``timeout`` (seconds), ``workers``, ``preload`` (True: gunicorn's
        ``preload_app``), passed as ``FAULTS_*`` variables (see the project's settings).
    :returns: the running :class:`examples.run.Server`, with ``app`` set to the
        ``application_name`` of its connections.
    """
    port = free_port()
    app = f"faults-{kind}-{uuid.uuid4().hex[:8]}"
    env = {
        **os.environ,
        "DATABASE_URL": conninfo,
        "FAULTS_APPLICATION_NAME": app,
        "FAULTS_ROLE": role,
        "PORT": str(port),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        **{f"FAULTS_{key.upper()}": str(int(value) if isinstance(value, bool) else value)
           for key, value in settings.items()},
    }
    command = [part.replace("{workers}", str(settings.get("workers", 1))) for part in COMMANDS[kind]]
    with serving(command, ROOT, env, port) as server:
        server.app = app
        yield server


async def _get(session: aiohttp.ClientSession, path: str) -> dict[str, Any]:
    started = time.monotonic()
    try:
        async with session.get(path, timeout=aiohttp.ClientTimeout(total=REQUEST_SECONDS)) as response:
            body = await response.json() if response.content_type == "application/json" else None
            status: int | str = response.status
            retry_after = response.headers.get("Retry-After")
    except (aiohttp.ClientError, asyncio.TimeoutError) as ex:
        body, status, retry_after = None, type(ex).__name__, None
    return {"path": path, "started": started, "seconds": time.monotonic() - started, "status": status,
            "body": body, "retry_after": retry_after}


async def _gather(base_url: str, paths: list[str], concurrency: int, seconds: float) -> list[dict[str, Any]]:
    deadline = time.monotonic() + seconds
    outcomes: list[dict[str, Any]] = []

    async def client(session: aiohttp.ClientSession, number: int) -> None:
        while time.monotonic() < deadline:
            outcomes.append(await _get(session, paths[(number + len(outcomes)) % len(paths)]))

    connector = aiohttp.TCPConnector(limit=concurrency, keepalive_timeout=1.0)
    async with aiohttp.ClientSession(base_url, connector=connector) as session:
        await asyncio.gather(*(client(session, number) for number in range(concurrency)))
    return outcomes


def hammer(server: Server, paths: list[str], concurrency: int, seconds: float) -> list[dict[str, Any]]:
    """GET ``paths`` in turn with ``concurrency`` clients until ``seconds`` have passed (no request
    starts later; each may take :data:`REQUEST_SECONDS`). Returns one dict per request: path,
    started (``time.monotonic()``), seconds (its latency), status (HTTP status or the exception's
    name), body (its JSON, or None) and retry_after (the header, or None)."""
    return asyncio.run(_gather(server.base_url, paths, concurrency, seconds))


def get(server: Server, path: str) -> dict[str, Any]:
    """GET ``path`` once; return the outcome, as :func:`hammer` does."""
    async def once() -> dict[str, Any]:
        async with aiohttp.ClientSession(server.base_url) as session:
            return await _get(session, path)
    return asyncio.run(once())
