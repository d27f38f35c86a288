"""The servers of the end-to-end benchmark: start one on a free port of 127.0.0.1, serve, stop.

Each kind runs one worker process: gunicorn's gevent worker (``gevent``), gunicorn's threaded
worker (``gthread``) and uvicorn (``uvicorn``, which serves in the process it starts: no child).
uvicorn serves Django's own ASGI application with the lifespan off (:mod:`bench.app.asgi`), or
hybridpool's with the lifespan on (:mod:`bench.app.hybrid_asgi`) for the engines of
:data:`bench.engines.HYBRID_ASGI`. Starting, waiting and stopping are the main job's
(:mod:`examples.run`).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from examples.run import BIN, environment, free_port, read_log, stop, wait_until_serving
from examples.load import HOST

from .engines import HYBRID_ASGI

ROOT = Path(__file__).resolve().parent.parent

#: Threads of the gthread worker; client connections one gevent worker accepts at once.
GTHREAD_THREADS = 20
WORKER_CONNECTIONS = 1000

GUNICORN = [str(BIN / "gunicorn"), "-w", "1", "-b", f"{HOST}:{{port}}", "--log-level", "warning",
            "--worker-connections", str(WORKER_CONNECTIONS)]

#: The command of each kind of server (``{port}`` filled in).
COMMANDS: dict[str, list[str]] = {
    "gevent": [*GUNICORN, "-k", "gevent", "bench.app.wsgi"],
    "gthread": [*GUNICORN, "-k", "gthread", "--threads", str(GTHREAD_THREADS), "bench.app.wsgi"],
    "uvicorn": [str(BIN / "uvicorn"), "{application}", "--host", HOST, "--port", "{port}",
                "--workers", "1", "--no-access-log", "--lifespan", "{lifespan}", "--log-level", "warning"],
}
SERVERS = tuple(COMMANDS)
#: uvicorn's application and ``--lifespan``: Django's own (which refuses the lifespan protocol), or
#: hybridpool's (whose ``lifespan.startup`` marks the loop as serving, as NativeQuerySet requires).
DJANGO_ASGI = {"application": "bench.app.asgi:application", "lifespan": "off"}
HYBRIDPOOL_ASGI = {"application": "bench.app.hybrid_asgi:application", "lifespan": "on"}

MIGRATE_SECONDS = 120.0


@dataclass
class Server:
    """A running server: its base URL, the ``application_name`` of its connections, its process."""

    base_url: str
    application_name: str
    process: subprocess.Popen[bytes]
    log: str = ""  # the end of its output, once stopped
    #: The process that serves requests (``/stats/`` tells): gunicorn's worker, a child of
    #: ``process`` (its arbiter); uvicorn's ``process`` itself.
    pid: int = 0


def bench_environment(name: str, engine: str, conninfo: str, max_size: int, port: int = 0) -> dict[str, str]:
    """The environment of a benchmark process: the main job's, with the bench project and ``engine``.

    :param name: distinguishes this server's connections (``application_name`` ``hybridpool-<name>``).
    """
    return {**environment(name, conninfo, max_size, port), "DJANGO_SETTINGS_MODULE": "bench.app.settings",
            "BENCH_ENGINE": engine}


def migrate(conninfo: str) -> None:
    """Create and fill the benchmark's table in database ``conninfo`` (Django's ``migrate``).

    :raises RuntimeError: with its output, if it fails.
    """
    env = bench_environment("bench-migrate", "max-age-0", conninfo, 1)
    done = subprocess.run([sys.executable, "-m", "django", "migrate", "--no-input"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=MIGRATE_SECONDS)
    if done.returncode:
        raise RuntimeError(f"migrate failed ({done.returncode}):\n{done.stdout}{done.stderr}")


def command(kind: str, engine: str, port: int) -> list[str]:
    """The command line of a server of ``kind`` serving ``engine`` on ``port``."""
    application = HYBRIDPOOL_ASGI if engine in HYBRID_ASGI else DJANGO_ASGI
    return [part.format(port=port, **application) for part in COMMANDS[kind]]


def serving_pid(base_url: str) -> int:
    """The pid of the process that answers ``/stats/`` (the worker)."""
    with urllib.request.urlopen(f"{base_url}/stats/", timeout=10) as response:
        return int(json.load(response)["pid"])


@contextmanager
def serve(kind: str, engine: str, conninfo: str, max_size: int, name: str) -> Iterator[Server]:
    """Run a server of ``kind`` (one of :data:`SERVERS`) with ``engine`` until the block ends.

    :param name: distinguishes this server's connections; see :func:`bench_environment`.
    :raises RuntimeError: with the server's output, if it exits or is not serving in time.
    """
    port = free_port()
    env = bench_environment(name, engine, conninfo, max_size, port)
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(command(kind, engine, port), cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)
        server = Server(f"http://{HOST}:{port}", env["HYBRIDPOOL_APPLICATION_NAME"], process)
        try:
            wait_until_serving(process, server.base_url, log)
            server.pid = serving_pid(server.base_url)
            yield server
        finally:
            stop(process)
            server.log = read_log(log)
