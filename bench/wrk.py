"""One wrk run against a server on 127.0.0.1, read back as numbers.

wrk (Debian's package) keeps ``clients`` keep-alive connections busy for a fixed time from one
thread (plenty for a few thousand requests/s, and it leaves the server the other core), and
:file:`wrk_report.lua` prints its counts and latency percentiles as JSON.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path
from typing import Any

from examples.load import check_local

SCRIPT = Path(__file__).with_name("wrk_report.lua")
MARK = "BENCH-JSON "
#: Extra seconds a wrk run may take past its duration and timeout before it is killed.
GRACE_SECONDS = 30.0


def command(url: str, clients: int, seconds: int, timeout: int, method: str) -> list[str]:
    """The wrk command line: ``clients`` connections for ``seconds`` (s), a request timing out
    after ``timeout`` (s), ``method`` ``GET`` or ``POST``. wrk takes whole seconds only.

    :raises RuntimeError: wrk is not installed (``scripts/install-bench`` installs it).
    :raises ValueError: ``url`` is not on 127.0.0.1, or a time is not a whole number >= 1.
    """
    check_local(url)
    for name, value in (("seconds", seconds), ("timeout", timeout)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"wrk's {name} = {value!r}: wrk takes a whole number of seconds >= 1")
    wrk = shutil.which("wrk")
    if wrk is None:
        raise RuntimeError("wrk is not installed: run scripts/install-bench (apt-get install -y wrk)")
    args = [] if method == "GET" else ["--", method]
    return [wrk, "-t", "1", "-c", str(clients), "-d", f"{seconds}s", "--timeout", f"{timeout}s",
            "--latency", "-s", str(SCRIPT), url, *args]


def parse(output: str) -> dict[str, Any]:
    """Read the report line of :file:`wrk_report.lua` from wrk's output.

    :returns: requests, requests_per_s, p50_ms, p90_ms, p99_ms, max_ms, mean_ms, non_2xx
        (responses with status >= 400, as wrk counts them), socket_errors (connect + read +
        write), timeouts (requests without an answer within wrk's ``--timeout``).
    :raises RuntimeError: with the output, if there is no report line.
    """
    lines = [line for line in output.splitlines() if line.startswith(MARK)]
    if not lines:
        raise RuntimeError(f"wrk printed no report:\n{output}")
    raw = json.loads(lines[-1].removeprefix(MARK))
    return {
        "requests": raw["requests"],
        "requests_per_s": raw["requests"] / (raw["duration_us"] / 1e6),
        **{f"{key}_ms": raw[f"{key}_us"] / 1000 for key in ("p50", "p90", "p99", "max", "mean")},
        "non_2xx": raw["status_errors"],
        "socket_errors": raw["connect_errors"] + raw["read_errors"] + raw["write_errors"],
        "timeouts": raw["timeouts"],
    }


async def run(url: str, clients: int, seconds: int, timeout: int, method: str = "GET") -> dict[str, Any]:
    """Run wrk (see :func:`command`) and return :func:`parse`'s numbers.

    :raises RuntimeError: wrk failed, printed no report, or ran past its time.
    """
    process = await asyncio.create_subprocess_exec(*command(url, clients, seconds, timeout, method),
                                                   stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    try:
        out, _ = await asyncio.wait_for(process.communicate(), seconds + timeout + GRACE_SECONDS)
    except asyncio.TimeoutError:
        process.kill()
        await process.wait()
        raise RuntimeError(f"wrk ran longer than {seconds + timeout + GRACE_SECONDS} s") from None
    output = out.decode(errors="replace")
    if process.returncode:
        raise RuntimeError(f"wrk exited with status {process.returncode}:\n{output}")
    return parse(output)
