"""Instructions per request, counted by callgrind: the steadiest figure for small changes.

``python -m bench.instructions [--server uvicorn|gevent] [--engines ...] [--view afirst]
[--requests 100,400]`` creates a fresh database, then for each engine runs a child under
``valgrind --tool=callgrind`` twice, sending ``--requests`` requests after 50 of warm-up, and
prints the difference of the two totals divided by the difference of the counts: what one request
costs the whole process (every thread and greenlet: the event loop's, the request threads, the
pools' workers), start-up and warm-up left out. No server and no sockets but PostgreSQL's:

- ``--server uvicorn`` (the default; engines ``hybridpool-native,hybridpool-asgi,hybridpool,builtin``,
  view ``afirst``): one request at a time through the engine's ASGI application, with the
  ``receive`` and ``send`` of :func:`bench.breakdown.one_request`. The engines of
  :data:`bench.engines.HYBRID_ASGI` run under hybridpool's application, whose loop is marked as
  serving (``NativeQuerySet`` reads natively); the others under Django's.
- ``--server gevent`` (engines ``hybridpool,hybridpool-rollback,builtin``, view ``one``): in a
  process patched by ``gevent.monkey``, :data:`GREENLETS` greenlets send them
  (:func:`bench.handler.get`) to the WSGI application gunicorn serves (:mod:`bench.app.wsgi`), as
  its gevent worker does at 10 clients.

User-space instructions only: a system call counts its libc wrapper, not the kernel's work, and
nothing of PostgreSQL's backends, and no waiting: a thread hop costs few instructions and much
CPU time (the kernel's, the GIL's handovers). Nor are instructions all alike: under gevent,
``reset="rollback"`` counted 0.5 % more than Django's pool yet cost 5-7 % more CPU at 10 clients
(``bench.handler``, ``bench.e2e``), where ``bench.profile`` finds hybridpool's own code in 6-7 % of
the worker's samples and psycopg_pool's in 1.5 %: a few thousand instructions run once per
request, between Django's, most likely with cold caches. Runs of the same code differ by up to
about 20,000 instructions per request (about 0.7 %), even back to back: compare engines or
versions measured in one run, and read no smaller difference as a gain. Needs valgrind
(``apt-get install valgrind``); about a minute per engine.

Writes ``bench/results/instructions-<UTC time>.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from . import harness, servers
from .e2e import names
from .engines import HYBRID_ASGI

DBNAME = "hybridpool_bench_instructions"
#: The engines measured by default, and the view, per ``--server``.
ENGINES = {"uvicorn": ("hybridpool-native", "hybridpool-asgi", "hybridpool", "builtin"),
           "gevent": ("hybridpool", "hybridpool-rollback", "builtin")}
VIEWS = {"uvicorn": "afirst", "gevent": "one"}
BASELINE = "builtin"
#: Greenlets requesting at once under ``--server gevent``.
GREENLETS = 10
WARMUP = 50
#: The pools' cap, as in ``bench.e2e``.
MAX_SIZE = 20
COLLECTED = re.compile(r"Collected : (\d+)")


def child(server: str, view: str, requests: int) -> int:
    """In the child (under callgrind): ``WARMUP`` then ``requests`` requests of ``/<view>/``,
    through the application ``server`` serves for the engine in ``bench.e2e``."""
    if server == "gevent":
        return gevent_child(view, requests)
    from hybridpool import registry

    from .breakdown import get_scope, one_request

    hybrid = os.environ["BENCH_ENGINE"] in HYBRID_ASGI
    app = importlib.import_module("bench.app.hybrid_asgi" if hybrid else "bench.app.asgi").application
    scope = get_scope(f"/{view}/")

    async def run() -> None:
        if hybrid:
            registry.serving(asyncio.get_running_loop())  # what its lifespan.startup does under uvicorn
        for _ in range(WARMUP + requests):
            status = await one_request(app, scope)
            assert status == 200, status

    asyncio.run(run())
    return 0


def gevent_child(view: str, requests: int) -> int:
    """In the child patched by ``gevent.monkey``: :data:`GREENLETS` greenlets share ``WARMUP``,
    then ``requests``, requests of ``/<view>/`` through the WSGI application gunicorn serves
    (:mod:`bench.app.wsgi`)."""
    import gevent

    from .app.wsgi import application
    from .handler import get

    def client(count: int) -> None:
        for _ in range(count):
            get(application, view)

    for total in (WARMUP, requests):
        shares = [total // GREENLETS + (number < total % GREENLETS) for number in range(GREENLETS)]
        gevent.joinall([gevent.spawn(client, share) for share in shares], raise_error=True)
    return 0


def count(server: str, engine: str, conninfo: str, view: str, requests: int) -> int:
    """Total user-space instructions of a child sending ``requests`` requests (callgrind's count).

    :raises RuntimeError: callgrind printed no count (the child failed: its output is included).
    """
    env = {**servers.bench_environment("bench-instructions", engine, conninfo, MAX_SIZE), "HYBRIDPOOL_BENCH_CHILD": "1"}
    with tempfile.TemporaryDirectory() as scratch:
        patch = ["-m", "gevent.monkey", "--module"] if server == "gevent" else ["-m"]
        done = subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={scratch}/out.%p",
                               sys.executable, *patch, "bench.instructions", harness.CHILD_FLAG, server, view,
                               str(requests)],
                              env=env, cwd=Path(__file__).parent.parent, capture_output=True, text=True,
                              timeout=harness.CHILD_TIMEOUT)
    found = COLLECTED.findall(done.stderr)
    if done.returncode or not found:
        raise RuntimeError(f"{engine}: callgrind counted nothing (exit {done.returncode}):\n{done.stderr[-3000:]}")
    return int(found[0])  # the first process's: the child itself


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == [harness.CHILD_FLAG]:
        return child(argv[1], argv[2], int(argv[3]))
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--server", choices=list(ENGINES), default="uvicorn", help="default: uvicorn")
    parser.add_argument("--engines", type=names, help="default: per server, " + "; ".join(
        f"{server}: {','.join(engines)}" for server, engines in ENGINES.items()))
    parser.add_argument("--view", help="default: per server, " + "; ".join(
        f"{server}: {view}" for server, view in VIEWS.items()))
    parser.add_argument("--requests", type=lambda text: [int(n) for n in names(text)], default=[100, 400],
                        help="the two request counts whose totals are compared, default 100,400")
    args = parser.parse_args(argv)
    if shutil.which("valgrind") is None:
        parser.error("needs valgrind: apt-get install valgrind")
    args.engines = args.engines or list(ENGINES[args.server])
    args.view = args.view or VIEWS[args.server]
    if args.server == "gevent" and (asgi_only := HYBRID_ASGI.intersection(args.engines)):
        parser.error(f"--server gevent: {','.join(sorted(asgi_only))} serve ASGI only")
    few, many = args.requests
    per_request: dict[str, float] = {}
    with harness.database(DBNAME) as conninfo:
        servers.migrate(conninfo)
        for engine in args.engines:
            totals = [count(args.server, engine, conninfo, args.view, n) for n in (few, many)]
            per_request[engine] = (totals[1] - totals[0]) / (many - few)
            print(f"{engine:20} {per_request[engine] / 1e3:8.0f}k instructions per request", flush=True)
    base = per_request.get(BASELINE)
    table = [[engine, f"{value / 1e3:.0f}k", f"{value / base:.3f}" if base else "-"] for engine, value in per_request.items()]
    harness.print_table(["engine", "instructions/request", f"x {BASELINE}"], table)
    path = harness.write_results("instructions", {"args": vars(args), "per_request": per_request})
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
