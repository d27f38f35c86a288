"""A pool's stats read as metric values: the gauges of :mod:`hybridpool.metrics.names` from
psycopg_pool's ``get_stats()`` keys. Pure functions, shared by the Prometheus and the
OpenTelemetry exporters.

=====================================================  ==================================================
metric (attributes)                                    from ``get_stats()`` (:mod:`hybridpool.stats`)
=====================================================  ==================================================
``db.client.connection.count`` (state ``idle``)        ``pool_available``
``db.client.connection.count`` (state ``used``)        ``pool_size - pool_available``
``db.client.connection.idle.max``                      ``pool_max`` (any connection may be idle)
``db.client.connection.idle.min``                      ``pool_min``
``db.client.connection.max``                           ``pool_max``
``db.client.connection.pending_requests``              ``requests_waiting``
=====================================================  ==================================================

``used`` counts the connections of ``pool_size`` that are not idle: lent, and the few being opened
or closed at that instant (psycopg_pool counts them in ``pool_size``). The async pools of one alias
(one per event loop) are one pool here: their connections and waiting callers add up, and their
sizes are the alias's, which they share (hybridpool's budget).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import NamedTuple

from .. import stats
from . import names

__all__ = ["PoolStats", "Reading", "read"]


class PoolStats(NamedTuple):
    """One pool's stats and what names it.

    :ivar pool_name: its ``name`` (OpenTelemetry's ``db.client.connection.pool.name``).
    :ivar alias: the Django alias, or ``""``.
    :ivar driver: ``gevent``, ``thread`` or ``async``.
    :ivar stats: its ``get_stats()``.
    """

    pool_name: str
    alias: str
    driver: str
    stats: Mapping[str, int]


class Reading(NamedTuple):
    """One value of one gauge: ``instrument`` with ``attributes`` (OpenTelemetry names) is ``value``."""

    instrument: names.Instrument
    attributes: tuple[tuple[str, str], ...]
    value: int


def _sizes(found: Mapping[str, int]) -> dict[names.Instrument, int]:
    size, idle = found.get(stats.POOL_SIZE, 0), found.get(stats.POOL_AVAILABLE, 0)
    return {
        names.IDLE_MAX: found.get(stats.POOL_MAX, 0),
        names.IDLE_MIN: found.get(stats.POOL_MIN, 0),
        names.MAX: found.get(stats.POOL_MAX, 0),
        names.PENDING_REQUESTS: found.get(stats.REQUESTS_WAITING, 0),
        # the two states of COUNT, under two keys of their own below
        _IDLE: idle,
        _USED: max(size - idle, 0),
    }


_IDLE = names.Instrument(names.COUNT.name + "#idle", "updowncounter", "{connection}", "")
_USED = names.Instrument(names.COUNT.name + "#used", "updowncounter", "{connection}", "")
#: How the values of pools that share attributes (an alias's async pools) combine.
_ADDED = {_IDLE, _USED, names.PENDING_REQUESTS}


def read(pools: Iterable[PoolStats]) -> list[Reading]:
    """The gauges' values for ``pools``, one reading per instrument (and state) per pool name,
    alias and driver, in :data:`names.INSTRUMENTS` order, then by pool."""
    combined: dict[tuple[str, str, str], dict[names.Instrument, int]] = {}
    for pool in pools:
        values = _sizes(pool.stats)
        key = (pool.pool_name, pool.alias, pool.driver)
        if key not in combined:
            combined[key] = values
            continue
        into = combined[key]
        for instrument, value in values.items():
            into[instrument] = into[instrument] + value if instrument in _ADDED else max(into[instrument], value)
    readings = []
    for key, values in combined.items():
        attributes = tuple(zip(names.POOL_ATTRIBUTES, key))
        readings.append(Reading(names.COUNT, ((names.STATE, names.IDLE), *attributes), values[_IDLE]))
        readings.append(Reading(names.COUNT, ((names.STATE, names.USED), *attributes), values[_USED]))
        for instrument in (names.IDLE_MAX, names.IDLE_MIN, names.MAX, names.PENDING_REQUESTS):
            readings.append(Reading(instrument, attributes, values[instrument]))
    order = {instrument: number for number, instrument in enumerate(names.INSTRUMENTS)}
    readings.sort(key=lambda reading: order[reading.instrument])  # stable: by pool within an instrument
    return readings
