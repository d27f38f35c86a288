"""What a request costs the server process, without HTTP: Django's WSGI handler called by greenlets.

``python -m bench.handler [--engines hybridpool,hybridpool-rollback,builtin,max-age-none]
[--views one,five] [--clients 10,100] [--seconds 3] [--rounds 5]`` creates a fresh database, then
for each round, view, client count and engine starts a child under ``python -m gevent.monkey``
(as gunicorn's gevent worker patches) in which ``clients`` greenlets call the bench project's WSGI
application (:mod:`bench.app`) back to back for ``seconds`` after a 1 s warm-up. The child
reports requests, wall time and the CPU time of its process (``time.process_time``).

Without wrk, gunicorn and their sockets sharing the two cores, this is the cost the engine adds to
Django's own work per request, in CPU µs, measured closely enough to tell 2 % apart: the end-to-end
figures (:mod:`bench.e2e`) move by 10 % or more between rounds on the 2-core machine. The server's
PostgreSQL backends are not counted: a round trip the engine adds (the ``DISCARD ALL`` of
``reset="safe"``) shows here by its client side only (libpq's send and read, the wait).

Prints the medians over rounds (CPU µs per request, requests/s, and their ratios to the built-in
pool within each round) and writes ``bench/results/handler-<UTC time>.json``.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import sys
import time
from collections import defaultdict
from typing import Any

from . import harness
from .e2e import names

DBNAME = "hybridpool_bench_handler"
ENGINES = ("hybridpool", "hybridpool-rollback", "builtin", "max-age-none")
BASELINE = "builtin"
#: Engines without a pool hold a server connection per greenlet: run at this many clients at most
#: (PostgreSQL's default ``max_connections`` is 100).
UNPOOLED, UNPOOLED_MAX_CLIENTS = {"max-age-none"}, 20
WARMUP = 1.0


def serve(view: str, clients: int, seconds: float) -> dict[str, Any]:
    """In the patched child: ``clients`` greenlets request ``/<view>/`` back to back; return the
    requests done, the wall and the process CPU seconds of the timed part.

    :raises AssertionError: a response was not 200.
    """
    import gevent

    from .app.wsgi import application  # what gunicorn serves: Django set up, its WSGI handler

    done = 0

    def client(until: float) -> None:
        nonlocal done
        while time.monotonic() < until:
            get(application, view)
            done += 1

    gevent.joinall([gevent.spawn(client, time.monotonic() + WARMUP) for _ in range(clients)], raise_error=True)
    done = 0
    wall, cpu = time.monotonic(), time.process_time()
    gevent.joinall([gevent.spawn(client, wall + seconds) for _ in range(clients)], raise_error=True)
    return {"requests": done, "wall_s": time.monotonic() - wall, "cpu_s": time.process_time() - cpu}


def get(application: Any, view: str) -> None:
    """One GET of ``/<view>/`` through the WSGI ``application``, its body read and the response
    closed (``request_finished``: Django gives its connections back there).

    :raises AssertionError: the response was not 200.
    """
    def start_response(status: str, headers: list[tuple[str, str]]) -> None:
        assert status.startswith("200"), status

    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": f"/{view}/", "QUERY_STRING": "", "SERVER_NAME": "127.0.0.1",
               "SERVER_PORT": "80", "HTTP_HOST": "127.0.0.1", "wsgi.url_scheme": "http", "wsgi.input": io.BytesIO()}
    response = application(environ, start_response)
    b"".join(response)
    response.close()


def child(argv: list[str]) -> int:
    engine, view, clients, seconds = argv[0], argv[1], int(argv[2]), float(argv[3])
    os.environ.update({"DJANGO_SETTINGS_MODULE": "bench.app.settings", "BENCH_ENGINE": engine,
                       "HYBRIDPOOL_APPLICATION_NAME": "hybridpool-bench-handler"})
    print(json.dumps(serve(view, clients, seconds)))
    return 0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--engines", type=names, default=list(ENGINES), help=f"default: {','.join(ENGINES)}")
    parser.add_argument("--views", type=names, default=["one", "five"], help="default: one,five")
    parser.add_argument("--clients", type=lambda text: [int(n) for n in names(text)], default=[10, 100],
                        help="greenlets requesting at once, default 10,100")
    parser.add_argument("--seconds", type=float, default=3.0, help="timed part of each cell, default 3")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds, default 5")
    return parser.parse_args(argv)


def rows(records: list[dict[str, Any]], engines: list[str]) -> list[list[Any]]:
    """Medians over rounds per (view, clients, engine): CPU µs per request, requests/s, and the
    ratios to :data:`BASELINE` taken within each round."""
    by_cell: dict[tuple[str, int], dict[int, dict[str, dict[str, float]]]] = defaultdict(lambda: defaultdict(dict))
    for record in records:
        by_cell[record["view"], record["clients"]][record["round"]][record["engine"]] = record
    table = []
    for (view, clients), rounds in by_cell.items():
        for engine in engines:
            mine = [cells[engine] for cells in rounds.values() if engine in cells]
            if not mine:
                continue
            base = [(cells[engine], cells[BASELINE]) for cells in rounds.values() if {engine, BASELINE} <= cells.keys()]
            cpu_ratio = statistics.median(a["cpu_us"] / b["cpu_us"] for a, b in base) if base else None
            rate_ratio = statistics.median(a["requests_per_s"] / b["requests_per_s"] for a, b in base) if base else None
            table.append([view, clients, engine, len(mine), statistics.median(r["cpu_us"] for r in mine),
                          cpu_ratio if cpu_ratio is not None else "-",
                          statistics.median(r["requests_per_s"] for r in mine),
                          rate_ratio if rate_ratio is not None else "-"])
    return table


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == [harness.CHILD_FLAG]:
        return child(argv[1:])
    args = parse_args(argv)
    from . import servers

    records = []
    with harness.database(DBNAME) as conninfo:
        servers.migrate(conninfo)
        for number in range(1, args.rounds + 1):
            for view in args.views:
                for clients in args.clients:
                    for engine in args.engines:
                        if engine in UNPOOLED and clients > UNPOOLED_MAX_CLIENTS:
                            continue
                        got = harness.run_patched_child("bench.handler", conninfo,
                                                        [engine, view, str(clients), str(args.seconds)])
                        record = {"round": number, "engine": engine, "view": view, "clients": clients,
                                  "cpu_us": got["cpu_s"] / got["requests"] * 1e6,
                                  "requests_per_s": got["requests"] / got["wall_s"], **got}
                        records.append(record)
                        print(f"round {number} {view} {clients:>3} {engine:20} {record['cpu_us']:6.0f} µs CPU"
                              f" {record['requests_per_s']:6.0f} req/s", flush=True)
    table = rows(records, args.engines)
    harness.print_table(["view", "clients", "engine", "rounds", "CPU µs/request", f"x {BASELINE} CPU",
                         "req/s", f"x {BASELINE} req/s"], table)
    path = harness.write_results("handler", {"args": vars(args), "records": records, "table": table})
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
