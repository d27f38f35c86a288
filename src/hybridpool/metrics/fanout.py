"""The one :class:`hybridpool.stats.Observer` of the process, handing each pool event to every
installed exporter (Prometheus, OpenTelemetry)."""

from __future__ import annotations

import threading
from typing import Any

from .. import stats

__all__ = ["add", "remove", "installed"]

_lock = threading.Lock()
_exporters: tuple[stats.Observer, ...] = ()


class _Fanout:
    """Forwards the drivers' events (:class:`hybridpool.stats.Observer`) to the exporters."""

    def lent(self, pool: Any, seconds: float) -> None:
        for exporter in _exporters:
            exporter.lent(pool, seconds)

    def timed_out(self, pool: Any) -> None:
        for exporter in _exporters:
            exporter.timed_out(pool)

    def used(self, pool: Any, seconds: float) -> None:
        for exporter in _exporters:
            exporter.used(pool, seconds)

    def created(self, pool: Any, seconds: float) -> None:
        for exporter in _exporters:
            exporter.created(pool, seconds)


_fanout = _Fanout()


def add(exporter: stats.Observer) -> None:
    """Hand every pool event to ``exporter`` too; the first one installs the observer, after
    which every checkout is timed (:data:`hybridpool.stats.report_from` is 0)."""
    global _exporters
    with _lock:
        if exporter not in _exporters:
            _exporters = (*_exporters, exporter)
        stats.set_observer(_fanout)


def remove(exporter: stats.Observer) -> None:
    """Stop handing events to ``exporter``; with none left, the drivers report nothing again."""
    global _exporters
    with _lock:
        _exporters = tuple(found for found in _exporters if found is not exporter)
        stats.set_observer(_fanout if _exporters else None)


def installed() -> tuple[stats.Observer, ...]:
    """The exporters events are handed to."""
    return _exporters
