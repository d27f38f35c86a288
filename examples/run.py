"""The main job: serve the example app in each deployment, load it, check the connection bounds.

``python -m examples.run [--requests 500] [--concurrency 100] [--max-size 10]`` creates a fresh
database ``hybridpool_example`` on ``DATABASE_URL`` (or on a throwaway embedded PostgreSQL), then for
each deployment migrates it, starts the server on a free port of 127.0.0.1, runs
:func:`examples.load.run_load`, stops the server and prints one row of a markdown table. The exit
status is 1 if a deployment had errors, more server connections than its bound, or connections
still checked out (or idle in a transaction) after the load.

The bound: gevent has one pool per process (the ORM's), so ``max_size``; ASGI has two, each capped
at ``max_size``: the ORM's (serving the ``sync_to_async`` threads) and the event loop's (serving
``hybridpool.aconnection()``), and their connections share one ``application_name``, so the server
sees up to ``2 * max_size``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from hybridpool.embedded import create_database, drop_database, server_url

from .load import HOST, run_load

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
BIN = Path(sys.executable).parent  # the servers of this virtualenv
DBNAME = "hybridpool_example"

#: Per deployment: the server command (``{port}`` filled in), the paths to load, pools per process.
DEPLOYMENTS: dict[str, dict[str, Any]] = {
    "gevent": {
        "command": [str(BIN / "gunicorn"), "-c", str(EXAMPLES / "gevent" / "gunicorn.conf.py"), "project.wsgi"],
        "paths": ["/notes/", "POST:/notes/"],
        "pools": 1,
    },
    "asgi": {
        "command": [str(BIN / "uvicorn"), "project.asgi:application", "--host", HOST, "--port", "{port}",
                    "--workers", "1", "--no-access-log", "--lifespan", "on"],
        "paths": ["/notes/", "POST:/notes/", "/raw/"],
        "pools": 2,
    },
}

STARTUP_SECONDS = 30.0
SHUTDOWN_SECONDS = 15.0
MIGRATE_SECONDS = 120.0
LOG_TAIL = 4000  # characters of server output kept in a result


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that is free now."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def environment(kind: str, conninfo: str, max_size: int, port: int) -> dict[str, str]:
    """The environment of a deployment's processes: its database, pool size, name and port."""
    return {
        **os.environ,
        "DATABASE_URL": conninfo,
        "HYBRIDPOOL_MAX_SIZE": str(max_size),
        "HYBRIDPOOL_APPLICATION_NAME": f"hybridpool-{kind}",
        "DJANGO_SETTINGS_MODULE": "project.settings",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        "PORT": str(port),
    }


def migrate(kind: str, env: dict[str, str]) -> None:
    """Run the project's ``manage.py migrate``.

    :raises RuntimeError: with its output, if it fails.
    """
    done = subprocess.run([sys.executable, "manage.py", "migrate", "--no-input"], cwd=EXAMPLES / kind, env=env,
                          capture_output=True, text=True, timeout=MIGRATE_SECONDS)
    if done.returncode:
        raise RuntimeError(f"{kind}: manage.py migrate failed ({done.returncode}):\n{done.stdout}{done.stderr}")


def read_log(log: IO[bytes]) -> str:
    """Return the end of a server's output."""
    log.seek(0)
    return log.read().decode(errors="replace")[-LOG_TAIL:]


def wait_until_serving(server: subprocess.Popen[bytes], base_url: str, log: IO[bytes]) -> None:
    """Wait until ``/stats/`` answers 200.

    :raises RuntimeError: with the server's output, if it exits or is not serving in time.
    """
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"server exited with status {server.returncode}:\n{read_log(log)}")
        try:
            with urllib.request.urlopen(f"{base_url}/stats/", timeout=1.0) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.1)
    raise RuntimeError(f"server not serving after {STARTUP_SECONDS} s:\n{read_log(log)}")


def stop(server: subprocess.Popen[bytes]) -> None:
    """Stop a server with SIGTERM; kill its process group if it is still running after a while."""
    server.send_signal(signal.SIGTERM)
    try:
        server.wait(SHUTDOWN_SECONDS)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()


@dataclass
class Server:
    """A server process started by :func:`serving`."""

    process: subprocess.Popen[bytes]
    base_url: str
    log: IO[bytes]
    #: The end of its output, once it has stopped.
    output: str = ""

    def read_log(self) -> str:
        """The end of its output so far."""
        return read_log(self.log)


@contextmanager
def serving(command: list[str], cwd: Path, env: dict[str, str], port: int) -> Iterator[Server]:
    """Start ``command`` (``{port}`` filled in) in a session of its own, wait until it serves
    ``/stats/`` on ``port``, yield it, then :func:`stop` it unless it has already exited.

    :raises RuntimeError: with its output, if it exits or is not serving in time.
    """
    base_url = f"http://{HOST}:{port}"
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen([part.format(port=port) for part in command], cwd=cwd, env=env, stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True)
        server = Server(process, base_url, log)
        try:
            wait_until_serving(process, base_url, log)
            yield server
        finally:
            if process.poll() is None:
                stop(process)
            server.output = read_log(log)


def problems(result: dict[str, Any]) -> list[str]:
    """What went wrong in a deployment's result: errors, too many connections, leftovers."""
    found = []
    if result["errors"]:
        found.append(f"{result['errors']} failed requests: {result['error_kinds']}")
    if result["peak_server_connections"] > result["bound"]:
        found.append(f"peak of {result['peak_server_connections']} server connections > bound {result['bound']}")
    if result["checked_out_after"]:
        found.append(f"{result['checked_out_after']} connections still checked out: {result['pool_stats']}")
    if result["idle_in_transaction_after"]:
        found.append(f"{result['idle_in_transaction_after']} connections idle in transaction after the load")
    return found


def run_deployment(kind: str, conninfo: str, requests: int, concurrency: int, max_size: int) -> dict[str, Any]:
    """Migrate database ``conninfo``, serve it with deployment ``kind``, load it and stop it.

    :param kind: ``"gevent"`` or ``"asgi"``.
    :returns: :func:`examples.load.run_load`'s result plus kind, max_size, pools (pools per
        process), bound (most server connections allowed: ``pools * max_size``),
        checked_out_after (``pool_size - pool_available`` summed over the process's pools),
        server_log (the end of the server's output) and problems (see :func:`problems`).
    """
    deployment = DEPLOYMENTS[kind]
    port = free_port()
    env = environment(kind, conninfo, max_size, port)
    migrate(kind, env)
    with serving(deployment["command"], EXAMPLES / kind, env, port) as server:
        result = asyncio.run(run_load(server.base_url, deployment["paths"], requests, concurrency, conninfo,
                                      env["HYBRIDPOOL_APPLICATION_NAME"]))
    result["server_log"] = server.output
    result.update(
        kind=kind,
        max_size=max_size,
        pools=deployment["pools"],
        bound=deployment["pools"] * max_size,
        checked_out_after=sum(s["pool_size"] - s["pool_available"] for s in result["pool_stats"].values()),
    )
    result["problems"] = problems(result)
    return result


def table(results: list[dict[str, Any]]) -> str:
    """The results as a markdown table, one row per deployment."""
    header = ("deployment", "requests", "ok", "errors", "req/s", "p50 ms", "p99 ms", "peak server connections",
              "max_size", "connection bound", "checked out after load")
    rows = [
        (r["kind"], r["requests"], r["ok"], r["errors"], f"{r['requests_per_s']:.0f}", f"{r['p50_ms']:.1f}",
         f"{r['p99_ms']:.1f}", r["peak_server_connections"], r["max_size"],
         f"{r['bound']} ({r['pools']} x max_size)",
         r["checked_out_after"])
        for r in results
    ]
    lines = [header, ("---",) * len(header), *rows]
    return "\n".join("| " + " | ".join(map(str, line)) + " |" for line in lines)


def main(argv: list[str] | None = None) -> int:
    """The CLI: run every deployment, print the table and the problems; return the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--max-size", type=int, default=10)
    args = parser.parse_args(argv)
    with server_url() as url:
        conninfo = create_database(url, DBNAME)
        try:
            results = [run_deployment(kind, conninfo, args.requests, args.concurrency, args.max_size)
                       for kind in DEPLOYMENTS]
        finally:
            drop_database(url, DBNAME)
    print(table(results))
    for result in results:
        for problem in result["problems"]:
            print(f"\n{result['kind']}: {problem}")
        if result["problems"]:
            print(f"{result['kind']} server output (end):\n{result['server_log']}")
    return 1 if any(result["problems"] for result in results) else 0


if __name__ == "__main__":
    sys.exit(main())
