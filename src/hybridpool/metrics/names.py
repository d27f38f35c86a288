"""The metrics' names: OpenTelemetry's semantic conventions for database client connection pools,
their Prometheus form, and HikariCP's names for the same measures. Pure data and functions.

Sources: OpenTelemetry semantic conventions, "Semantic conventions for database client metrics",
connection pool metrics (``db.client.connection.*``, development status); OpenTelemetry's
"Prometheus and OpenMetrics compatibility" rules for the Prometheus names (dots become
underscores, the unit ``s`` becomes the suffix ``_seconds``, annotations such as ``{connection}``
are dropped, a counter gets ``_total``); HikariCP's metrics as Micrometer exports them to
Prometheus (``hikaricp_connections_*``, label ``pool``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = [
    "STATE", "POOL_NAME", "ALIAS", "DRIVER", "IDLE", "USED", "LABELS", "Instrument", "INSTRUMENTS",
    "COUNT", "IDLE_MAX", "IDLE_MIN", "MAX", "PENDING_REQUESTS", "TIMEOUTS", "CREATE_TIME", "WAIT_TIME",
    "USE_TIME", "by_name", "prometheus_name", "prometheus_label",
]

# Attributes (OpenTelemetry) and their Prometheus labels.
#: ``idle`` or ``used`` (semconv ``db.client.connection.state``).
STATE = "db.client.connection.state"
#: The pool's name (semconv ``db.client.connection.pool.name``): the pool's ``name`` setting,
#: which is the Django alias unless ``OPTIONS["pool"]["name"]`` says otherwise.
POOL_NAME = "db.client.connection.pool.name"
#: The Django database alias (hybridpool's; ``""`` for a pool made by ``create_pool()``).
ALIAS = "hybridpool.alias"
#: The driver serving the pool: ``gevent``, ``thread`` (psycopg_pool) or ``async`` (hybridpool's).
DRIVER = "hybridpool.driver"
IDLE = "idle"
USED = "used"

#: Prometheus label of each attribute: the short names the issue and dashboards use.
LABELS = {STATE: "state", POOL_NAME: "pool_name", ALIAS: "alias", DRIVER: "driver"}


@dataclass(frozen=True)
class Instrument:
    """One metric.

    :ivar name: OpenTelemetry's name.
    :ivar kind: ``"updowncounter"`` (a gauge in Prometheus), ``"counter"`` or ``"histogram"``.
    :ivar unit: UCUM unit: ``s``, or an annotation such as ``{connection}``.
    :ivar description: what it measures.
    :ivar attributes: its attributes, besides the pool's (:data:`POOL_NAME`, :data:`ALIAS`, :data:`DRIVER`).
    :ivar buckets: a histogram's upper bounds, in seconds (``+Inf`` implied).
    :ivar hikaricp: HikariCP's Prometheus name of the same measure (Micrometer), or ``""``.
    """

    name: str
    kind: str
    unit: str
    description: str
    attributes: tuple[str, ...] = ()
    buckets: tuple[float, ...] = ()
    hikaricp: str = ""


#: Waits for a connection: mostly none (tens of µs for an idle connection), a connect's length
#: (ms) when the pool grows, up to ``timeout`` (30 s by default) when it is exhausted.
WAIT_BUCKETS = (0.0001, 0.0005, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
#: A borrower's hold of a connection: a request or a task, ms to a minute.
USE_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
#: Opening a connection: about 5 ms on loopback, more with TLS or across a network.
CREATE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

COUNT = Instrument("db.client.connection.count", "updowncounter", "{connection}",
                   "The number of connections that are currently in state described by the state attribute",
                   (STATE,), hikaricp="hikaricp_connections_active (used), hikaricp_connections_idle (idle)")
IDLE_MAX = Instrument("db.client.connection.idle.max", "updowncounter", "{connection}",
                      "The maximum number of idle open connections allowed")
IDLE_MIN = Instrument("db.client.connection.idle.min", "updowncounter", "{connection}",
                      "The minimum number of idle open connections allowed", hikaricp="hikaricp_connections_min")
MAX = Instrument("db.client.connection.max", "updowncounter", "{connection}",
                 "The maximum number of open connections allowed", hikaricp="hikaricp_connections_max")
PENDING_REQUESTS = Instrument("db.client.connection.pending_requests", "updowncounter", "{request}",
                              "The number of current pending requests for an open connection",
                              hikaricp="hikaricp_connections_pending")
TIMEOUTS = Instrument("db.client.connection.timeouts", "counter", "{timeout}",
                      "The number of connection timeouts that have occurred trying to obtain a connection"
                      " from the pool", hikaricp="hikaricp_connections_timeout_total")
CREATE_TIME = Instrument("db.client.connection.create_time", "histogram", "s",
                         "The time it took to create a new connection", buckets=CREATE_BUCKETS,
                         hikaricp="hikaricp_connections_creation_seconds")
WAIT_TIME = Instrument("db.client.connection.wait_time", "histogram", "s",
                       "The time it took to obtain an open connection from the pool", buckets=WAIT_BUCKETS,
                       hikaricp="hikaricp_connections_acquire_seconds")
USE_TIME = Instrument("db.client.connection.use_time", "histogram", "s",
                      "The time between borrowing a connection and returning it to the pool", buckets=USE_BUCKETS,
                      hikaricp="hikaricp_connections_usage_seconds")

#: Every metric, gauges (read from the pools' stats) first, then those counted event by event.
INSTRUMENTS = (COUNT, IDLE_MAX, IDLE_MIN, MAX, PENDING_REQUESTS, TIMEOUTS, CREATE_TIME, WAIT_TIME, USE_TIME)
#: The attributes of every metric, naming the pool.
POOL_ATTRIBUTES = (POOL_NAME, ALIAS, DRIVER)


def by_name(name: str) -> Instrument:
    """The instrument of OpenTelemetry name ``name``.

    :raises KeyError: not one of :data:`INSTRUMENTS`.
    """
    for instrument in INSTRUMENTS:
        if instrument.name == name:
            return instrument
    raise KeyError(name)


def prometheus_name(instrument: Instrument, *, exposed: bool = True) -> str:
    """The Prometheus name of ``instrument`` by OpenTelemetry's compatibility rules: e.g.
    ``db.client.connection.wait_time`` (unit ``s``) -> ``db_client_connection_wait_time_seconds``,
    ``db.client.connection.timeouts`` (a counter) -> ``db_client_connection_timeouts_total``.

    :param exposed: with a counter's ``_total`` (the name scraped); without it, the name to give
        ``prometheus_client.Counter``, which adds it.
    """
    name = re.sub(r"[^a-zA-Z0-9_:]", "_", instrument.name)
    if instrument.unit == "s":
        name += "_seconds"
    if instrument.kind == "counter" and exposed:
        name += "_total"
    return name


def prometheus_label(attribute: str) -> str:
    """The Prometheus label of OpenTelemetry attribute ``attribute`` (:data:`LABELS`), or the
    attribute with dots as underscores."""
    return LABELS.get(attribute) or re.sub(r"[^a-zA-Z0-9_]", "_", attribute)
