"""The pools' metrics through ``prometheus_client``, in one process or in several (its
multiprocess mode).

One process: a collector on the registry (prometheus_client's default ``REGISTRY``) reads every
pool's ``get_stats()`` at each scrape (the gauges), beside a ``Counter`` of timeouts and three
``Histogram`` objects observed at each event (:class:`hybridpool.stats.Observer`).

Several processes (``PROMETHEUS_MULTIPROC_DIR`` set before prometheus_client is imported, as
gunicorn and uvicorn workers need): prometheus_client's multiprocess mode supports no custom
collector, so the gauges are ``Gauge`` objects (``multiprocess_mode="livesum"``: the sum over the
processes alive) that each process sets from its own pools every :data:`REFRESH_INTERVAL` seconds,
in a thread of its own (a greenlet under gevent), and at each scrape it answers. The counter and
histograms are written by each process as events happen, and added up by prometheus_client's
``MultiProcessCollector`` at the scrape. A process that ended has its live gauges removed by the
next refresh of any other (prometheus_client's ``mark_process_dead``), so no server hook is needed.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections.abc import Iterator
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, multiprocess, values
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

from .. import process
from . import fanout, names, pools
from .readings import Reading, read

__all__ = ["REFRESH_INTERVAL", "PrometheusExporter", "install", "uninstall", "exposition", "multiprocess_mode"]

logger = logging.getLogger("hybridpool")

#: Seconds between two refreshes of a process's gauges in multiprocess mode.
REFRESH_INTERVAL = 1.0

_GAUGES = (names.COUNT, names.IDLE_MAX, names.IDLE_MIN, names.MAX, names.PENDING_REQUESTS)
_POOL_LABELS = [names.prometheus_label(attribute) for attribute in names.POOL_ATTRIBUTES]


def multiprocess_mode() -> bool:
    """True if prometheus_client runs in multiprocess mode (it decides when it is imported, from
    ``PROMETHEUS_MULTIPROC_DIR``)."""
    return values.ValueClass is not values.MutexValue


def _labelnames(instrument: names.Instrument) -> list[str]:
    return [names.prometheus_label(attribute) for attribute in instrument.attributes] + _POOL_LABELS


def _label_values(reading: Reading) -> tuple[str, ...]:
    return tuple(value for _, value in reading.attributes)


class _GaugeCollector(Collector):
    """The gauges, read from the pools at each scrape (one process)."""

    def describe(self) -> Iterator[GaugeMetricFamily]:
        for instrument in _GAUGES:
            yield GaugeMetricFamily(names.prometheus_name(instrument), instrument.description,
                                    labels=_labelnames(instrument))

    def collect(self) -> Iterator[GaugeMetricFamily]:
        families = {instrument: GaugeMetricFamily(names.prometheus_name(instrument), instrument.description,
                                                  labels=_labelnames(instrument)) for instrument in _GAUGES}
        for reading in read(pools.snapshot()):
            families[reading.instrument].add_metric(_label_values(reading), reading.value)
        yield from families.values()


class PrometheusExporter:
    """The pools' metrics as prometheus_client objects on ``registry``; an
    :class:`hybridpool.stats.Observer` of the pools' events.

    :param registry: where to register them (prometheus_client's default ``REGISTRY``).
    :raises ValueError: their names are registered already (prometheus_client's "Duplicated timeseries").
    """

    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        self.registry = registry
        self.multiprocess = multiprocess_mode()
        self.timeouts = Counter(names.prometheus_name(names.TIMEOUTS, exposed=False), names.TIMEOUTS.description,
                                _POOL_LABELS, registry=registry)
        self.create_time, self.wait_time, self.use_time = (
            Histogram(names.prometheus_name(instrument), instrument.description, _POOL_LABELS, registry=registry,
                      unit="seconds", buckets=instrument.buckets)
            for instrument in (names.CREATE_TIME, names.WAIT_TIME, names.USE_TIME))
        self._children: dict[tuple[Any, tuple[str, ...]], Any] = {}
        self._collector: _GaugeCollector | None = None
        self._gauges: dict[names.Instrument, Gauge] = {}
        self._set: set[tuple[names.Instrument, tuple[str, ...]]] = set()  # gauge children set so far
        self._refresh_lock = threading.Lock()
        self._refreshing = 0  # the process whose refreshing thread runs
        self._stopped = False
        if self.multiprocess:
            self._gauges = {
                instrument: Gauge(names.prometheus_name(instrument), instrument.description, _labelnames(instrument),
                                  registry=registry, multiprocess_mode="livesum")
                for instrument in _GAUGES}
        else:
            self._collector = _GaugeCollector()
            registry.register(self._collector)

    # -- events (hybridpool.stats.Observer)

    def _child(self, metric: Any, pool: Any) -> Any:
        key = (metric, pools.labels(pool))
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*key[1])
        return child

    def lent(self, pool: Any, seconds: float) -> None:
        if self.multiprocess and self._refreshing != process.pid:  # a forked child's first checkout
            self.keep_refreshing()
        self._child(self.wait_time, pool).observe(seconds)

    def timed_out(self, pool: Any) -> None:
        self._child(self.timeouts, pool).inc()

    def used(self, pool: Any, seconds: float) -> None:
        self._child(self.use_time, pool).observe(seconds)

    def created(self, pool: Any, seconds: float) -> None:
        self._child(self.create_time, pool).observe(seconds)

    # -- multiprocess mode

    def refresh(self) -> None:
        """Multiprocess mode: set this process's gauges from its pools now (a pool gone reads 0),
        and remove the live gauges of processes that ended. Nothing in one process."""
        if not self.multiprocess:
            return
        with self._refresh_lock:
            now = set()
            for reading in read(pools.snapshot()):
                key = (reading.instrument, _label_values(reading))
                self._gauges[reading.instrument].labels(*key[1]).set(reading.value)
                now.add(key)
            for instrument, label_values in self._set - now:
                self._gauges[instrument].labels(*label_values).set(0)
            self._set = now
        _forget_ended_processes()

    def keep_refreshing(self) -> None:
        """Multiprocess mode: refresh this process's gauges every :data:`REFRESH_INTERVAL` seconds
        in a daemon thread (a greenlet once gevent patched ``threading``), from now on. Started
        by :func:`hybridpool.metrics.install`, and in a forked child (gunicorn's ``preload_app``) by its first
        checkout, once the worker has set itself up (gevent's patching included), not at fork."""
        if self.multiprocess and self._refreshing != process.pid:
            self._refreshing = process.pid
            threading.Thread(target=self._run, args=(process.pid,), name="hybridpool-metrics", daemon=True).start()

    def _run(self, pid: int) -> None:
        while pid == process.pid and not self._stopped:  # a forked child starts its own
            try:
                self.refresh()
            except Exception:  # a pool closing meanwhile: the next refresh reads again
                logger.debug("refreshing the pools' gauges failed", exc_info=True)
            time.sleep(REFRESH_INTERVAL)

    def unregister(self) -> None:
        """Remove its metrics from its registry, and stop refreshing."""
        self._stopped = True
        for metric in (self.timeouts, self.create_time, self.wait_time, self.use_time, self._collector,
                       *self._gauges.values()):
            if metric is not None:
                self.registry.unregister(metric)


_LIVE_GAUGE = re.compile(r"gauge_live\w*?_(\d+)\.db$")


def _forget_ended_processes() -> None:
    """Remove the live gauges of the processes that ended without ``mark_process_dead`` (uvicorn
    has no hook for it; a gunicorn without ``child_exit``)."""
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR", os.environ.get("prometheus_multiproc_dir"))
    if not path:
        return
    try:
        entries = os.listdir(path)
    except OSError:
        return
    for pid in {int(match.group(1)) for entry in entries if (match := _LIVE_GAUGE.match(entry))}:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            multiprocess.mark_process_dead(pid, path)  # type: ignore[no-untyped-call]  # unannotated
        except OSError:  # another user's process: alive
            pass


_exporter: PrometheusExporter | None = None
_install_lock = threading.Lock()


def install() -> PrometheusExporter:
    """Register the pools' metrics on prometheus_client's default registry and start observing
    the pools' events, once per process (later calls return the same exporter). In multiprocess
    mode, also start refreshing this process's gauges (again in each forked child)."""
    global _exporter
    with _install_lock:
        if _exporter is None:
            _exporter = PrometheusExporter()
            _exporter.keep_refreshing()
            fanout.add(_exporter)
    return _exporter


def uninstall() -> None:
    """Undo :func:`hybridpool.metrics.install`: the pools' metrics leave the default registry and their events are
    no longer observed (for tests, or to turn metrics off); :func:`hybridpool.metrics.install` makes new ones."""
    global _exporter
    with _install_lock:
        if _exporter is not None:
            fanout.remove(_exporter)
            _exporter.unregister()
            _exporter = None


@process.after_fork_in_child
def _forget_lock_after_fork() -> None:
    global _install_lock
    _install_lock = threading.Lock()


def exposition(accept: str | None = None) -> tuple[bytes, str]:
    """The text a ``/metrics`` endpoint answers, and its content type: Prometheus' text format,
    or OpenMetrics if ``accept`` (the request's ``Accept`` header) asks for it. In multiprocess
    mode, every process's metrics (this process's gauges refreshed first); else the default
    registry's, the pools' included. Installs the exporter if needed (:func:`hybridpool.metrics.install`)."""
    exporter = install()
    registry: CollectorRegistry = exporter.registry
    if exporter.multiprocess:
        exporter.keep_refreshing()
        exporter.refresh()
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]  # unannotated
    encoder, content_type = choose_encoder(accept or "")
    return encoder(registry), content_type
