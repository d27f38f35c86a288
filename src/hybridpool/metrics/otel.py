"""The pools' metrics through OpenTelemetry's metrics API (``opentelemetry-api``).

Instruments are made on the meter ``hybridpool`` of the global ``MeterProvider`` (or of the one
given): the gauges as observable up-down counters, read from every pool's ``get_stats()`` when the
SDK collects, as the semantic conventions define them; the timeouts as a counter and the three
durations as histograms, recorded at each event (:class:`hybridpool.stats.Observer`). Made before
the application sets its ``MeterProvider``, they are bound to it once it does (the API's proxy).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import Any

import opentelemetry.metrics as metrics

from . import fanout, names, pools
from .readings import read

__all__ = ["METER_NAME", "OpenTelemetryExporter", "install", "uninstall"]

#: The name of hybridpool's meter (its instrumentation scope).
METER_NAME = "hybridpool"

_GAUGES = (names.COUNT, names.IDLE_MAX, names.IDLE_MIN, names.MAX, names.PENDING_REQUESTS)


class OpenTelemetryExporter:
    """The pools' instruments on a meter; an :class:`hybridpool.stats.Observer` of their events.

    :param meter_provider: the provider of the meter (default: the global one,
        ``opentelemetry.metrics.get_meter_provider()``).
    """

    def __init__(self, meter_provider: metrics.MeterProvider | None = None) -> None:
        meter = metrics.get_meter(METER_NAME, meter_provider=meter_provider)
        for instrument in _GAUGES:
            meter.create_observable_up_down_counter(instrument.name, callbacks=[self._callback(instrument)],
                                                    unit=instrument.unit, description=instrument.description)
        self.timeouts = meter.create_counter(names.TIMEOUTS.name, unit=names.TIMEOUTS.unit,
                                             description=names.TIMEOUTS.description)
        self.create_time, self.wait_time, self.use_time = (
            meter.create_histogram(instrument.name, unit=instrument.unit, description=instrument.description,
                                   explicit_bucket_boundaries_advisory=instrument.buckets)
            for instrument in (names.CREATE_TIME, names.WAIT_TIME, names.USE_TIME))
        self._attributes: dict[tuple[str, str, str], dict[str, str]] = {}

    @staticmethod
    def _callback(instrument: names.Instrument) -> Any:
        def observe(options: metrics.CallbackOptions) -> Iterable[metrics.Observation]:
            return [metrics.Observation(reading.value, dict(reading.attributes))
                    for reading in read(pools.snapshot()) if reading.instrument is instrument]

        return observe

    def _of(self, pool: Any) -> dict[str, str]:
        key = pools.labels(pool)
        found = self._attributes.get(key)
        if found is None:
            found = self._attributes[key] = dict(zip(names.POOL_ATTRIBUTES, key))
        return found

    def lent(self, pool: Any, seconds: float) -> None:
        self.wait_time.record(seconds, self._of(pool))

    def timed_out(self, pool: Any) -> None:
        self.timeouts.add(1, self._of(pool))

    def used(self, pool: Any, seconds: float) -> None:
        self.use_time.record(seconds, self._of(pool))

    def created(self, pool: Any, seconds: float) -> None:
        self.create_time.record(seconds, self._of(pool))


_exporters: list[tuple[metrics.MeterProvider | None, OpenTelemetryExporter]] = []
_lock = threading.Lock()


def install(meter_provider: metrics.MeterProvider | None = None) -> OpenTelemetryExporter:
    """Make the pools' instruments on the meter of ``meter_provider`` (default: the global
    provider) and start recording the pools' events into them; once per provider (later calls
    return the same exporter)."""
    with _lock:
        for provider, exporter in _exporters:
            if provider is meter_provider:
                return exporter
        exporter = OpenTelemetryExporter(meter_provider)
        _exporters.append((meter_provider, exporter))
        fanout.add(exporter)
        return exporter


def uninstall(meter_provider: metrics.MeterProvider | None = None) -> None:
    """Stop recording the pools' events into the instruments of ``meter_provider`` (default: the
    global provider's). The observable instruments stay on the meter (the API cannot remove
    them): drop the provider with them."""
    with _lock:
        for found in [found for found in _exporters if found[0] is meter_provider]:
            _exporters.remove(found)
            fanout.remove(found[1])
