"""PoolConfig: the validated settings of one pool.

Built from Django's ``DATABASES[alias]["OPTIONS"]["pool"]`` (the same place and shape as Django's
built-in pool, so moving from it is a one-word ENGINE change) or from keyword arguments
(:func:`hybridpool.create_pool`). Every value is checked when the object is built: a wrong one raises
:class:`~django.core.exceptions.ImproperlyConfigured` naming the key, the value and what is allowed.
Defaults are psycopg_pool's, so ``OPTIONS["pool"] = True`` behaves as it does with Django's pool.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

from django.core.exceptions import ImproperlyConfigured

DRIVERS = ("auto", "gevent", "thread")
CHECKS = ("auto", "always", "never")
RESETS = ("safe", "rollback")


@dataclasses.dataclass(frozen=True)
class PoolConfig:
    """The settings of one pool; frozen and validated on creation.

    :param min_size: connections kept open even when idle, opened in the background (conns, >= 0).
    :param max_size: hard cap of server connections per process and alias (conns, >= 1 and
        >= ``min_size``); ``None`` means ``min_size``, as in psycopg_pool.
    :param timeout: longest wait for a connection before :class:`~psycopg_pool.PoolTimeout` (s, > 0).
    :param max_waiting: callers allowed to wait at once; the next one gets
        :class:`~psycopg_pool.TooManyRequests` at once (callers, 0 = no limit).
    :param max_lifetime: a connection older than this, minus up to 5 % jitter, is closed when
        returned (s, > 0).
    :param max_idle: connections above ``min_size`` idle this long are closed (s, > 0).
    :param reconnect_timeout: how long failed connection attempts are retried, backing off from
        1 s, before giving up (s, > 0). psycopg_pool's scheme.
    :param check: liveness check on checkout: ``"auto"`` checks with one empty query only a
        connection idle for 1 s or more or whose socket has data pending, ``"always"`` checks every
        checkout, ``"never"`` checks none.
    :param reset: what runs on a returned connection after any open transaction is rolled back:
        ``"safe"`` (``DISCARD ALL``: role, GUCs, advisory locks, temp tables, ``LISTEN``, cursors
        and prepared statements of one borrower never reach the next), ``"rollback"`` (nothing
        more: faster, for code that never changes session state) or a callable taking the
        :class:`psycopg.Connection`, which must leave it idle.
    :param driver: ``"auto"`` (gevent's green driver when gevent has monkey-patched ``threading``,
        else the psycopg_pool driver), ``"gevent"`` or ``"thread"``.
    :raises ImproperlyConfigured: for a value of the wrong type or out of range.
    """

    min_size: int = 4
    max_size: int | None = None
    timeout: float = 30.0
    max_waiting: int = 0
    max_lifetime: float = 3600.0
    max_idle: float = 600.0
    reconnect_timeout: float = 300.0
    check: str = "auto"
    reset: str | Callable[[Any], None] = "safe"
    driver: str = "auto"

    def __post_init__(self) -> None:
        self._validate(where="hybridpool setting")

    def _validate(self, where: str) -> None:
        _integer(where, "min_size", self.min_size, minimum=0)
        if self.max_size is None:
            object.__setattr__(self, "max_size", max(self.min_size, 1))
        _integer(where, "max_size", self.max_size, minimum=max(self.min_size, 1), why=f" (min_size is {self.min_size})")
        _seconds(where, "timeout", self.timeout)
        _integer(where, "max_waiting", self.max_waiting, minimum=0)
        _seconds(where, "max_lifetime", self.max_lifetime)
        _seconds(where, "max_idle", self.max_idle)
        _seconds(where, "reconnect_timeout", self.reconnect_timeout)
        _choice(where, "check", self.check, CHECKS)
        if not callable(self.reset):
            _choice(where, "reset", self.reset, RESETS, extra="or a callable taking the connection")
        _choice(where, "driver", self.driver, DRIVERS)

    @classmethod
    def from_options(cls, options: Mapping[str, Any] | bool | None, *, alias: str = "default") -> PoolConfig:
        """Build the config from Django's ``OPTIONS["pool"]`` of database ``alias``.

        :param options: ``True``, ``None`` (the defaults) or a dict of the keys above.
        :raises ImproperlyConfigured: for an unknown key, a wrong type or an impossible value;
            the message names ``DATABASES[alias]["OPTIONS"]["pool"][key]``.
        """
        where = f"DATABASES[{alias!r}]['OPTIONS']['pool']"
        if options is True or options is None:
            options = {}
        if not isinstance(options, Mapping):
            raise ImproperlyConfigured(
                f"{where} = {options!r} ({type(options).__name__}): must be True or a dict of pool settings"
            )
        return cls.from_mapping(options, where=where)

    @classmethod
    def from_mapping(cls, options: Mapping[str, Any], *, where: str = "hybridpool setting") -> PoolConfig:
        """Build the config from keyword settings; ``where`` prefixes every error message."""
        known = {f.name for f in dataclasses.fields(cls)}
        for key in options:
            if key not in known:
                raise ImproperlyConfigured(f"{_name(where, key)}: unknown setting; allowed: {', '.join(sorted(known))}")
        config = object.__new__(cls)
        for f in dataclasses.fields(cls):
            object.__setattr__(config, f.name, options.get(f.name, f.default))
        config._validate(where=where)
        return config


def _name(where: str, key: str) -> str:
    return f"{where}[{key!r}]" if where.endswith("]") else f"{where} {key!r}"


def _error(where: str, key: str, value: Any, allowed: str) -> ImproperlyConfigured:
    return ImproperlyConfigured(f"{_name(where, key)} = {value!r} ({type(value).__name__}): must be {allowed}")


def _integer(where: str, key: str, value: Any, *, minimum: int, why: str = "") -> None:
    if type(value) is not int or value < minimum:
        raise _error(where, key, value, f"an int >= {minimum}{why}")


def _seconds(where: str, key: str, value: Any) -> None:
    if type(value) not in (int, float) or not value > 0 or value == float("inf"):
        raise _error(where, key, value, "a number of seconds > 0 (int or float)")


def _choice(where: str, key: str, value: Any, allowed: tuple[str, ...], extra: str = "") -> None:
    if value not in allowed or not isinstance(value, str):
        choices = " or ".join(repr(a) for a in allowed)
        raise _error(where, key, value, f"{choices} {extra}".strip())
