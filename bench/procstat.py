"""CPU time of a process or thread from ``/proc`` (Linux): user plus system, all threads of a
process, ended ones included."""

from __future__ import annotations

import os
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def stat_cpu(path: str) -> float:
    """User plus system CPU seconds in a ``/proc/.../stat`` file (of a process or a thread):
    fields 14 and 15 (``utime``, ``stime``), in clock ticks."""
    fields = Path(path).read_text().rsplit(")", 1)[1].split()  # the command name may hold spaces
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def process_cpu(pid: int) -> float:
    """CPU seconds of process ``pid`` (all its threads, ended ones included; not its children)."""
    return stat_cpu(f"/proc/{pid}/stat")
