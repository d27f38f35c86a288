"""Where a request's time goes: py-spy samples one server process while wrk loads one view.

``python -m bench.profile [--server gevent] [--engine hybridpool] [--view one] [--clients 10]
[--seconds 5]`` starts the server on a fresh database, loads the view with wrk and records the
worker process with ``py-spy record --format raw`` (CPU samples only: a greenlet or thread waiting
on a socket is not sampled). It prints the share of samples by the package of the running frame
(own time) and by function anywhere in the stack (inclusive time), and writes the raw stacks to
``bench/results/profile-<server>-<engine>-<view>.txt`` (for flamegraph.pl or speedscope).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import shutil
import subprocess
import sys
import urllib.request
from collections import Counter
from pathlib import Path

from hybridpool.embedded import create_database, drop_database, server_url

from . import servers, wrk
from .e2e import DBNAME, markdown
from .harness import RESULTS
from .matrix import VIEWS

FRAME = re.compile(r"(?P<function>.*) \((?P<file>[^:()]*):\d+\)$")
#: Samples per second (py-spy), and the share of a function below which it is not listed.
RATE = 200
MIN_SHARE = 0.01
#: Seconds py-spy starts before the load and goes on after it.
MARGIN = 1


def shares(raw: str) -> tuple[int, Counter[str], Counter[str]]:
    """Read py-spy's raw (collapsed) stacks: ``frame;frame;... count`` per line.

    :returns: the number of samples; samples by package of the innermost frame (its file's first
        path component); samples by ``package: function`` anywhere in the stack, once a sample.
    """
    total, own, inclusive = 0, Counter(), Counter()
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        frames = [match for frame in stack.split(";") if (match := FRAME.match(frame))]
        if not frames:
            continue
        samples = int(count)
        total += samples
        own[frames[-1]["file"].split("/")[0]] += samples
        for name in {f"{frame['file'].split('/')[0]}: {frame['function']}" for frame in frames}:
            inclusive[name] += samples
    return total, own, inclusive


async def load_while_recording(url: str, pid: int, clients: int, seconds: int, output: Path) -> dict:
    """Run py-spy on ``pid`` for the load's time plus margins, and wrk on ``url``."""
    spy = await asyncio.create_subprocess_exec(
        shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy"), "record", "--pid", str(pid),
        "--duration", str(seconds + 2 * MARGIN), "--rate", str(RATE), "--format", "raw",
        "--output", str(output), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    await asyncio.sleep(MARGIN)
    result = await wrk.run(url, clients, seconds, max(seconds, 5))
    await asyncio.wait_for(spy.wait(), seconds + 30)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--server", default="gevent", choices=servers.SERVERS)
    parser.add_argument("--engine", default="hybridpool")
    parser.add_argument("--view", default="one", choices=tuple(VIEWS))
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--seconds", type=int, default=5, help="load (s, whole), default 5")
    args = parser.parse_args(argv)
    RESULTS.mkdir(exist_ok=True)
    output = RESULTS / f"profile-{args.server}-{args.engine}-{args.view}.txt"
    with server_url() as url:
        conninfo = create_database(url, DBNAME)
        try:
            servers.migrate(conninfo)
            with servers.serve(args.server, args.engine, conninfo, 20, "bench-profile") as server:
                with urllib.request.urlopen(f"{server.base_url}/stats/") as response:
                    pid = json.load(response)["pid"]  # the worker, not gunicorn's arbiter
                path, _ = VIEWS[args.view]
                result = asyncio.run(load_while_recording(server.base_url + path, pid, args.clients,
                                                          args.seconds, output))
        finally:
            drop_database(url, DBNAME)
    total, own, inclusive = shares(output.read_text())
    print(f"{result['requests_per_s']:.0f} req/s; {total} samples of the worker's CPU at {RATE}/s; raw: {output}\n")
    print(markdown(["package (own time)", "share"], [[name, f"{n / total:.1%}"] for name, n in own.most_common()
                                                     if n / total >= MIN_SHARE]))
    print(markdown(["function (inclusive)", "share"], [[name, f"{n / total:.1%}"] for name, n in inclusive.most_common()
                                                       if n / total >= MIN_SHARE]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
