"""The pools' stats: psycopg_pool's keys, what each one counts, and the one recorder of them.

psycopg_pool counts into a mapping of its pools (``_stats``) under these keys. The green driver
records everything with the functions below, and the psycopg_pool driver records with them what
hybridpool does beside psycopg_pool (the use of a connection lent by ``getconn``, a checkout tried
again after a failed check), so that each key means the same on every driver:
``tests/test_contract.py`` runs one scenario on every pool and compares their stats.

Each function takes the pool's counters (a mapping whose missing keys count 0: a
``defaultdict(int)``, psycopg_pool's ``Counter``). Durations are counted in whole milliseconds,
as psycopg_pool counts them.
"""

from __future__ import annotations

from collections.abc import MutableMapping

# Gauges, read when the stats are asked for.
POOL_MIN = "pool_min"
POOL_MAX = "pool_max"
POOL_SIZE = "pool_size"
POOL_AVAILABLE = "pool_available"
REQUESTS_WAITING = "requests_waiting"
# Counters, recorded as things happen.
REQUESTS_NUM = "requests_num"
REQUESTS_QUEUED = "requests_queued"
REQUESTS_WAIT_MS = "requests_wait_ms"
REQUESTS_ERRORS = "requests_errors"
USAGE_MS = "usage_ms"
RETURNS_BAD = "returns_bad"
CONNECTIONS_NUM = "connections_num"
CONNECTIONS_MS = "connections_ms"
CONNECTIONS_ERRORS = "connections_errors"
CONNECTIONS_LOST = "connections_lost"

#: A pool's counters.
Counts = MutableMapping[str, int]

#: The mark of when a connection was lent (monotonic seconds), on the connections of a pool that
#: keeps no lease of them (the async pool: tasks end without a trace to watch).
LENT_AT = "_hybridpool_lent_at"


def _ms(seconds: float) -> int:
    return int(1000.0 * seconds)


def requested(counts: Counts) -> None:
    """A ``getconn``: counted before anything else, a request a closed pool refuses included."""
    counts[REQUESTS_NUM] += 1


def retried(counts: Counts) -> None:
    """The connection taken for a request failed its check and another is tried: the same request."""
    counts[REQUESTS_NUM] -= 1


def queued(counts: Counts) -> None:
    """A request found no idle connection and waits."""
    counts[REQUESTS_QUEUED] += 1


def waited(counts: Counts, since: float, now: float) -> None:
    """A queued request stopped waiting (served, timed out or interrupted); monotonic seconds."""
    counts[REQUESTS_WAIT_MS] += _ms(now - since)


def refused(counts: Counts) -> None:
    """A request failed: timed out, or refused by ``max_waiting``."""
    counts[REQUESTS_ERRORS] += 1


def used(counts: Counts, lent_at: float, now: float) -> None:
    """A lent connection came back, lent at ``lent_at`` (monotonic seconds): every lent connection
    is counted, however it was lent (``getconn``, ``connection()``, Django)."""
    counts[USAGE_MS] += _ms(now - lent_at)


def returned_bad(counts: Counts) -> None:
    """A returned connection was closed: broken, mid-query, or its clean-up failed or was interrupted."""
    counts[RETURNS_BAD] += 1


def connecting(counts: Counts) -> None:
    """A connection attempt: attempts are counted, as psycopg_pool counts them, not successes."""
    counts[CONNECTIONS_NUM] += 1


def connected(counts: Counts, since: float, now: float) -> None:
    """A connection attempt begun at ``since`` succeeded."""
    counts[CONNECTIONS_MS] += _ms(now - since)


def connect_failed(counts: Counts) -> None:
    """A connection attempt failed (or its ``configure`` did)."""
    counts[CONNECTIONS_ERRORS] += 1


def lost(counts: Counts) -> None:
    """A connection was found broken at checkout or by ``check()``, and closed."""
    counts[CONNECTIONS_LOST] += 1


def gauges(min_size: int, max_size: int, size: int, available: int, waiting: int) -> dict[str, int]:
    """The gauges of ``get_stats()``: sizes, connections open or being opened (``size``), idle
    (``available``), callers waiting."""
    return {POOL_MIN: min_size, POOL_MAX: max_size, POOL_SIZE: size, POOL_AVAILABLE: available,
            REQUESTS_WAITING: waiting}
