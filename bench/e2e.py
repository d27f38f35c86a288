"""The end-to-end benchmark: each engine served by real servers, loaded with wrk, in interleaved rounds.

``python -m bench.e2e [--servers gevent,uvicorn,gthread] [--engines ...]
[--views one,five,async,afirst,native,write] [--clients 10,100,500] [--seconds 2] [--warmup 1]
[--rounds 3]`` creates a fresh database ``hybridpool_bench`` on ``DATABASE_URL`` (or on a throwaway
embedded PostgreSQL) and fills it. Then, round after round, for each server kind and each engine
(A B C A B C), it starts one server, loads each of its (view, clients) cells with wrk after a
warm-up, reading the serving process's CPU time from ``/proc`` (:mod:`bench.measure`), and stops
it. It prints each round's table as it goes, then the medians over rounds (requests/s and CPU µs
per request, each with its ratio to the built-in pool), the gains of hybridpool's ASGI application
and of NativeQuerySet, the reset's cost and the targets (PASS/MISS), and writes them under
``bench/results/`` (``e2e-<UTC time>.json`` and ``.md``). See ``bench/README.md`` for the columns.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import os
import platform
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import psycopg

from hybridpool.embedded import create_database, drop_database, server_url

from . import servers, summary, targets
from .engines import BASELINE
from .harness import RESULTS, print_table, write_results
from .matrix import VIEWS, Plan, plan
from .measure import measure

ROOT = Path(__file__).resolve().parent.parent
DBNAME = "hybridpool_bench"
PACKAGES = ("django", "psycopg", "psycopg-pool", "gevent", "gunicorn", "uvicorn", "django-db-geventpool", "hybridpool")


def names(text: str) -> list[str]:
    """A comma-separated command-line list."""
    return [name.strip() for name in text.split(",") if name.strip()]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--servers", type=names, help="comma-separated: gevent, uvicorn, gthread (default: all)")
    parser.add_argument("--engines", type=names, help="comma-separated engines (default: each server's)")
    parser.add_argument("--views", type=names,
                        help="comma-separated: one, five, async, afirst, native, write (default: each server's)")
    parser.add_argument("--clients", type=lambda text: [int(n) for n in names(text)],
                        help="comma-separated concurrent clients (default: each server's)")
    parser.add_argument("--seconds", type=int, default=2, help="timed load per cell (s, whole), default 2")
    parser.add_argument("--warmup", type=int, default=1, help="untimed load before it (s, whole), default 1")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds, default 3")
    parser.add_argument("--timeout", type=int, default=5, help="wrk's request timeout (s, whole), default 5")
    parser.add_argument("--max-size", type=int, default=20, help="every pool's cap on server connections, default 20")
    parser.add_argument("--results", type=Path, default=RESULTS,
                        help=f"directory of the .json and .md results, default {RESULTS.relative_to(ROOT)}"
                             " (give /tmp or so for a trial run)")
    args = parser.parse_args(argv)
    for option in ("seconds", "rounds", "timeout", "max_size"):
        if getattr(args, option) < 1:
            parser.error(f"--{option.replace('_', '-')} {getattr(args, option)}: must be at least 1")
    if args.warmup < 0:
        parser.error(f"--warmup {args.warmup}: must be at least 0")
    return args


def machine(conninfo: str) -> dict[str, Any]:
    """What the figures were taken on: CPUs, load, Python, PostgreSQL, wrk and package versions."""
    with psycopg.connect(conninfo) as conn:
        postgres = conn.execute("SHOW server_version").fetchone()[0]
    wrk = subprocess.run(["wrk", "--version"], capture_output=True, text=True).stdout.splitlines()
    return {
        "cpus": os.cpu_count(), "load_average": os.getloadavg(), "python": platform.python_version(),
        "platform": platform.platform(), "postgresql": postgres, "wrk": wrk[0] if wrk else None,
        "packages": {name: metadata.version(name) for name in PACKAGES},
    }


def run_round(number: int, cells: Plan, conninfo: str, args: argparse.Namespace) -> tuple[list[dict[str, Any]], list[str]]:
    """Run every cell of the plan once: one server per (server kind, engine), in plan order but
    for the engines of each server kind, which start one place further each round (A B C, B C A,
    C A B): no engine always runs first after another kind of server, or last.

    :returns: the records, and the failures (a server that did not start, a wrk run that failed).
    """
    records, failures = [], []
    for kind, engines in cells.items():
        order = list(engines.items())
        shift = (number - 1) % len(order)
        for engine, engine_cells in order[shift:] + order[:shift]:
            name = f"bench-{kind}-{engine}-r{number}"
            try:
                with servers.serve(kind, engine, conninfo, args.max_size, name) as server:
                    for view, clients in engine_cells:
                        path, method = VIEWS[view]
                        result = asyncio.run(measure(server.base_url, path, method, clients, args.warmup,
                                                     args.seconds, args.timeout, conninfo, server.application_name,
                                                     server.pid, server.process.pid))
                        records.append({"round": number, "server": kind, "engine": engine, "view": view,
                                        "clients": clients, **result})
                        cpu = result["cpu_us_per_request"]
                        print(f"  round {number} {kind:8} {engine:20} {view:6} {clients:4} clients:"
                              f" {result['requests_per_s']:7.0f} req/s  CPU {'-' if cpu is None else round(cpu):>5} µs/req"
                              f"  p99 {result['p99_ms']:7.1f} ms"
                              f"  errors {result['non_2xx'] + result['socket_errors']}  timeouts {result['timeouts']}"
                              f"  peak conns {result['peak_server_connections']}", flush=True)
            except (RuntimeError, psycopg.OperationalError) as ex:  # psycopg: the monitor could not connect,
                # e.g. an unpooled engine under uvicorn has used up max_connections (it leaks one per request)
                failures.append(f"round {number}, {kind}, {engine}: {ex}")
                print(f"  round {number} {kind} {engine}: FAILED: {ex}", flush=True)
    return records, failures


def markdown(headers: list[str], cells: list[list[Any]]) -> str:
    """:func:`bench.harness.print_table`'s markdown table as a string."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        print_table(headers, cells)
    return out.getvalue()


def report(records: list[dict[str, Any]], max_size: int) -> tuple[str, list[dict[str, Any]], list[list[str]]]:
    """The report of a run: markdown text, summary rows and target verdicts."""
    rows = summary.rows(records)
    verdicts = targets.evaluate(rows, max_size)
    text = "\n".join([
        f"## Medians over rounds (ratios within a round, to {BASELINE} and to max-age-none)\n",
        markdown(*summary.table(rows)),
        "## Gains of hybridpool's ASGI application and of NativeQuerySet (ratios within a round)\n",
        markdown(["step", "server", "view", "clients", "req/s ratio", "CPU/req ratio", "CPU µs/req saved"],
                 summary.gains(records)),
        "## Cost of the default reset (hybridpool) against reset=\"rollback\" (hybridpool-rollback)\n",
        markdown(["server", "view", "clients", "req/s ratio", "extra µs per request"], summary.reset_costs(records)),
        f"## Targets (max_size {max_size})\n",
        markdown(targets.HEADERS, verdicts),
    ])
    return text, rows, verdicts


def main(argv: list[str] | None = None) -> int:
    """The CLI: run the plan, print and write the report; the exit status is 0 unless nothing ran."""
    args = parse_args(argv)
    try:
        cells, skipped = plan(args.servers, args.engines, args.views, args.clients)
    except ValueError as ex:
        print(f"bench.e2e: {ex}", file=sys.stderr)
        return 2
    for note in skipped:
        print(f"left out: {note}")
    records: list[dict[str, Any]] = []
    failures: list[str] = []
    started = time.monotonic()
    with server_url() as url:
        conninfo = create_database(url, DBNAME)
        try:
            servers.migrate(conninfo)
            info = machine(conninfo)
            for number in range(1, args.rounds + 1):
                print(f"round {number} of {args.rounds}", flush=True)
                round_records, round_failures = run_round(number, cells, conninfo, args)
                records += round_records
                failures += round_failures
                print(markdown(*summary.table(summary.rows(round_records))), flush=True)
        finally:
            drop_database(url, DBNAME)
    text, rows, verdicts = report(records, args.max_size)
    elapsed = time.monotonic() - started
    header = (f"# End-to-end benchmark, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}\n\n"
              f"`python -m bench.e2e {' '.join(argv if argv is not None else sys.argv[1:])}`: {args.rounds} rounds,"
              f" {args.warmup} s warm-up + {args.seconds} s per cell, {elapsed:.0f} s in all;"
              f" {info['cpus']} CPUs, PostgreSQL {info['postgresql']}, load average at start {info['load_average'][0]:.2f}.\n")
    print(text)
    for failure in failures:
        print(f"FAILED: {failure}")
    path = write_results("e2e", {"args": {**vars(args), "results": str(args.results)}, "machine": info,
                                 "elapsed_s": elapsed, "skipped": skipped, "failures": failures, "records": records,
                                 "summary": rows, "targets": verdicts}, args.results)
    path.with_suffix(".md").write_text(header + "\n" + text)
    print(f"wrote {path} and {path.with_suffix('.md').name}")
    return 0 if records else 1


if __name__ == "__main__":
    sys.exit(main())
