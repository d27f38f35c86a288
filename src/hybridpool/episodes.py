"""Exhaustion episodes: when a pool's callers start and stop waiting long, decided apart from I/O.

An *episode* begins with the first checkout that waited :data:`LONG_WAIT` seconds or more, timed
out (``PoolTimeout``) or was refused (``TooManyRequests``), and ends at the first checkout served in
less than :data:`LONG_WAIT` seconds once :data:`QUIET` seconds have passed without such a checkout.
Each episode is logged twice, whatever the number of callers that waited: once when it begins
(with the pool's numbers: connections in use, ``max_size``, callers waiting) and once when it ends
(its duration, the requests that waited long, timed out or were refused, the longest wait).

:class:`Episode` takes the decisions and reads no clock: every event carries its time (monotonic
seconds). :mod:`hybridpool.stats` feeds it from every driver's checkout and writes the log lines
worded here (:func:`began_message`, :func:`ended_message`).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["LONG_WAIT", "QUIET", "Began", "Ended", "Episode", "began_message", "ended_message"]

#: A checkout waiting this long or longer (seconds) begins an episode, or counts in the current one.
#: Change it before pools are created (each pool's :class:`Episode` reads it when made).
LONG_WAIT = 1.0
#: An episode ends at the first short checkout this many seconds (or more) after its last long one.
QUIET = 5.0


@dataclass(frozen=True)
class Began:
    """An episode began: log it (WARNING) with the pool's numbers.

    :ivar seconds: how long the checkout that began it waited.
    :ivar outcome: ``"served"``, ``"timed out"`` or ``"refused"`` (``max_waiting``).
    """

    seconds: float
    outcome: str


@dataclass(frozen=True)
class Ended:
    """An episode ended: log it (WARNING).

    :ivar duration: seconds from the beginning of its first long wait to the end of its last one.
    :ivar waited: long checkouts served (``LONG_WAIT`` seconds or more).
    :ivar timed_out: checkouts that raised ``PoolTimeout``.
    :ivar refused: checkouts refused by ``max_waiting`` (``TooManyRequests``).
    :ivar longest: the longest wait among them, in seconds.
    """

    duration: float
    waited: int
    timed_out: int
    refused: int
    longest: float


class Episode:
    """One pool's exhaustion episodes, as a state machine fed with its checkouts.

    Not thread-safe: the caller serialises the calls (:mod:`hybridpool.stats` holds a lock).

    :param long_wait: seconds; a checkout waiting this long or longer is long (default :data:`LONG_WAIT`).
    :param quiet: seconds without a long checkout before a short one ends the episode (default :data:`QUIET`).
    :ivar open: True while an episode lasts.
    """

    def __init__(self, long_wait: float | None = None, quiet: float | None = None) -> None:
        self.long_wait = LONG_WAIT if long_wait is None else long_wait
        self.quiet = QUIET if quiet is None else quiet
        self.open = False
        self._began = self._last = self._longest = 0.0
        self._waited = self._timed_out = self._refused = 0

    def served(self, now: float, seconds: float) -> Began | Ended | None:
        """A checkout was served at ``now`` after waiting ``seconds``."""
        if seconds >= self.long_wait:
            return self._long(now, seconds, "served")
        if self.open and now - self._last >= self.quiet:
            self.open = False
            return Ended(self._last - self._began, self._waited, self._timed_out, self._refused, self._longest)
        return None

    def failed(self, now: float, seconds: float, *, timed_out: bool) -> Began | None:
        """A checkout gave up at ``now`` after ``seconds``: timed out, or refused by ``max_waiting``."""
        began = self._long(now, seconds, "timed out" if timed_out else "refused")
        return began

    def _long(self, now: float, seconds: float, outcome: str) -> Began | None:
        began = None
        if not self.open:
            self.open = True
            self._began, self._longest = now - seconds, 0.0
            self._waited = self._timed_out = self._refused = 0
            began = Began(seconds, outcome)
        self._last = now
        self._longest = max(self._longest, seconds)
        if outcome == "served":
            self._waited += 1
        elif outcome == "timed out":
            self._timed_out += 1
        else:
            self._refused += 1
        return began


def began_message(name: str, began: Began, in_use: int, max_size: int, waiting: int) -> str:
    """The WARNING logged when an episode of pool ``name`` begins, with its numbers at that time."""
    what = {
        "served": f"a request waited {began.seconds:.2f} s for a connection",
        "timed out": f"a request timed out after {began.seconds:.2f} s",
        "refused": "a request was refused (max_waiting reached)",
    }[began.outcome]
    return (f"pool {name!r} exhausted: {what}; max_size={max_size}, {in_use} connections in use,"
            f" {waiting} callers waiting")


def ended_message(name: str, ended: Ended, long_wait: float) -> str:
    """The WARNING logged when an episode of pool ``name`` ends."""
    return (f"pool {name!r} no longer exhausted after {ended.duration:.2f} s:"
            f" {ended.waited} requests waited {long_wait:g} s or more, {ended.timed_out} timed out,"
            f" {ended.refused} refused; longest wait {ended.longest:.2f} s")
