"""The pools' stats: psycopg_pool's keys, what each one counts, and the one recorder of them.

psycopg_pool counts into a mapping of its pools (``_stats``) under these keys. The green driver
records everything with the functions below, and the psycopg_pool driver records with them what
hybridpool does beside psycopg_pool (the use of a connection lent by ``getconn``, a checkout tried
again after a failed check), so that each key means the same on every driver:
``tests/test_contract.py`` runs one scenario on every pool and compares their stats.

Each function takes the pool's counters (a mapping whose missing keys count 0: a
``defaultdict(int)``, psycopg_pool's ``Counter``). Durations are counted in whole milliseconds,
as psycopg_pool counts them.

The events that metrics measure one by one (a checkout's wait, a connection's use and creation, a
timeout) are also reported here, by every driver at the same points (:func:`lent`,
:func:`refused_checkout`, :func:`used`, :func:`created`), to the installed :class:`Observer`
(:mod:`hybridpool.metrics` installs one; none by default) and to the pool's exhaustion
:class:`~hybridpool.episodes.Episode`, logged here. A checkout served in less than
:data:`report_from` seconds is not reported: the driver compares, then calls :func:`lent`, so with
no observer and no episode open a checkout costs one clock read and one comparison more.
"""

from __future__ import annotations

import logging
from collections.abc import MutableMapping
from typing import Any, Protocol

from . import episodes, process

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


def used(counts: Counts, lent_at: float, now: float, pool: Any = None) -> None:
    """A lent connection came back, lent at ``lent_at`` (monotonic seconds): every lent connection
    is counted, however it was lent (``getconn``, ``connection()``, Django); and reported to the
    observer as ``pool``'s."""
    counts[USAGE_MS] += _ms(now - lent_at)
    if observer is not None and pool is not None:
        _report(observer.used, pool, now - lent_at)


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


# -- Per-event reports: observers (metrics) and exhaustion episodes (log lines)

logger = logging.getLogger("hybridpool")


class Observer(Protocol):
    """What measures a pool's events one by one (:mod:`hybridpool.metrics`' histograms and
    counter). Called in the thread, greenlet or task of the event, which it must not block;
    durations in seconds. ``pool`` is any driver's pool (``GreenPool``, ``ThreadPool``,
    ``LoopPool``)."""

    def lent(self, pool: Any, seconds: float) -> None:
        """A checkout was served after ``seconds``: OpenTelemetry's ``db.client.connection.wait_time``."""

    def timed_out(self, pool: Any) -> None:
        """A checkout raised ``PoolTimeout``: OpenTelemetry's ``db.client.connection.timeouts``."""

    def used(self, pool: Any, seconds: float) -> None:
        """A connection lent for ``seconds`` came back: ``db.client.connection.use_time``."""

    def created(self, pool: Any, seconds: float) -> None:
        """A new connection took ``seconds`` to open and configure: ``db.client.connection.create_time``."""


#: The installed observer (:func:`set_observer`), or None.
observer: Observer | None = None
#: Checkouts that took this many seconds or more are reported (:func:`lent`): the episodes' long
#: wait, or 0 while an observer is installed or an episode is open (a short checkout then ends it).
report_from: float = episodes.LONG_WAIT

_EPISODE = "_hybridpool_episode"  # the pool's Episode, made at its first report
#: Held across no I/O and no switch: an unpatched lock, so that a report never yields to gevent's
#: hub in the middle of a checkout or return (where a gevent.Timeout could then land).
_episodes_lock = process.unpatched("threading", "Lock")()
_open_episodes = 0


def _report(event: Any, *args: Any) -> None:
    """Hand an event to the observer; an observer that fails is logged, never the checkout's or
    the return's failure: the drivers report while they hold the connection."""
    try:
        event(*args)
    except Exception:
        logger.exception("the pools' metrics observer failed")


def set_observer(new: Observer | None) -> None:
    """Install ``new`` as the observer of every pool's events (None: none)."""
    global observer
    observer = new
    _update_report_from()


def set_long_wait(long_wait: float | None = None, quiet: float | None = None) -> None:
    """Set :data:`hybridpool.episodes.LONG_WAIT` and :data:`~hybridpool.episodes.QUIET` (seconds)
    for the pools' episodes from now on (a pool's current episode keeps its own).

    :raises ValueError: a negative value.
    """
    for value in (long_wait, quiet):
        if value is not None and value < 0:
            raise ValueError(f"episode thresholds are seconds >= 0, not {value!r}")
    if long_wait is not None:
        episodes.LONG_WAIT = long_wait
    if quiet is not None:
        episodes.QUIET = quiet
    _update_report_from()


def _update_report_from() -> None:
    global report_from
    report_from = 0.0 if observer is not None or _open_episodes else episodes.LONG_WAIT


def lent(pool: Any, started: float, now: float) -> None:
    """A checkout of ``pool`` begun at ``started`` was served at ``now`` (monotonic seconds).
    Called by the drivers when ``now - started >= report_from``."""
    episode = _episode(pool)
    with _episodes_lock:
        decision = episode.served(now, now - started)
        _count_open(decision)
    if decision is not None:
        _log(pool, decision, episode)
    if observer is not None:
        _report(observer.lent, pool, now - started)


def refused_checkout(pool: Any, now: float, timeout: float | None) -> None:
    """A checkout of ``pool`` gave up at ``now`` (monotonic seconds): ``PoolTimeout`` after waiting
    ``timeout`` seconds, or ``TooManyRequests`` (``max_waiting``) if ``timeout`` is None. Counted
    by the drivers in ``requests_errors`` too (:func:`refused`, or psycopg_pool itself)."""
    episode = _episode(pool)
    with _episodes_lock:
        decision = episode.failed(now, timeout or 0.0, timed_out=timeout is not None)
        _count_open(decision)
    if decision is not None:
        _log(pool, decision, episode)
    if observer is not None and timeout is not None:
        _report(observer.timed_out, pool)


def created(pool: Any, since: float, now: float) -> None:
    """A connection of ``pool`` whose opening began at ``since`` is ready (configured) at ``now``."""
    if observer is not None:
        _report(observer.created, pool, now - since)


def _episode(pool: Any) -> episodes.Episode:
    episode: episodes.Episode | None = getattr(pool, _EPISODE, None)
    if episode is None:
        episode = episodes.Episode()
        setattr(pool, _EPISODE, episode)
    return episode


def _count_open(decision: episodes.Began | episodes.Ended | None) -> None:
    """Under the lock: keep the count of open episodes, and :data:`report_from`, up to date."""
    global _open_episodes
    if isinstance(decision, episodes.Began):
        _open_episodes += 1
    elif isinstance(decision, episodes.Ended):
        _open_episodes -= 1
    else:
        return
    _update_report_from()


def _log(pool: Any, decision: episodes.Began | episodes.Ended, episode: episodes.Episode) -> None:
    if isinstance(decision, episodes.Ended):
        logger.warning("%s", episodes.ended_message(pool.name, decision, episode.long_wait))
        return
    now = pool.get_stats()
    logger.warning("%s", episodes.began_message(
        pool.name, decision, now.get(POOL_SIZE, 0) - now.get(POOL_AVAILABLE, 0), now.get(POOL_MAX, 0),
        now.get(REQUESTS_WAITING, 0)))


@process.after_fork_in_child
def _forget_episodes_after_fork() -> None:
    """A forked child has none of its parent's pools, so none of their open episodes."""
    global _episodes_lock, _open_episodes
    _episodes_lock = process.unpatched("threading", "Lock")()
    _open_episodes = 0
    _update_report_from()
