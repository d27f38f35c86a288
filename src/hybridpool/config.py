"""PoolConfig: the validated settings of one pool.

Built from a DATABASES entry's ``OPTIONS`` (:meth:`PoolConfig.from_django`: ``OPTIONS["pool"]``, the
place and shape of Django's built-in pool, so moving from it is a one-word ENGINE change, plus the
peers' settings, :mod:`hybridpool.migration`) or from keyword arguments (:func:`hybridpool.create_pool`).
Every value is checked when the object is built: a wrong one raises :class:`PoolSettingError` (an
:class:`~django.core.exceptions.ImproperlyConfigured` and a :class:`ValueError`) naming the key, the
value and what is allowed.
Defaults are psycopg_pool's, so ``OPTIONS["pool"] = True`` behaves as it does with Django's pool.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, cast

from django.core.exceptions import ImproperlyConfigured

from .validation import PoolSettingError, check_choice, check_int, check_seconds, setting_error, setting_name

DRIVERS = ("auto", "gevent", "thread")
CHECKS = ("auto", "always", "never")
RESETS = ("safe", "rollback")
#: PgBouncer's pool modes, for the ``pgbouncer`` setting (None: no PgBouncer in front).
PGBOUNCER_MODES = ("transaction", "session")

#: psycopg_pool's default ``min_size``; without ``min_size``, a ``max_size`` below it lowers it.
DEFAULT_MIN_SIZE = 4

#: psycopg_pool arguments that Django's built-in pool accepted in ``OPTIONS["pool"]`` and that
#: hybridpool sets itself, with the reason.
NOT_SETTABLE = {
    "kwargs": "the connection arguments come from the DATABASES entry (NAME, USER, ..., OPTIONS)",
    "conninfo": "the connection arguments come from the DATABASES entry (NAME, USER, ..., OPTIONS)",
    "open": "hybridpool opens a pool at its first use in each process",
    "connection_class": "Django's backend needs psycopg.Connection",
    "close_returns": "hybridpool always returns a connection on close(), which is how Django gives it back",
}


#: alias -> (a copy of the OPTIONS read, CONN_HEALTH_CHECKS, the config): :meth:`PoolConfig.of_alias`.
_configs: dict[str, tuple[dict[str, Any], bool, PoolConfig]] = {}


@dataclasses.dataclass(frozen=True)
class PoolConfig:
    """The settings of one pool; frozen and validated on creation.

    :param min_size: connections kept open even when idle, opened in the background (conns, >= 0);
        default 4, or ``max_size`` if that is lower.
    :param max_size: hard cap of server connections per process and alias (conns, >= 1 and
        >= ``min_size``); default ``min_size``, as in psycopg_pool, which must then be >= 1.
    :param timeout: longest wait for a connection before :class:`~psycopg_pool.PoolTimeout` (s, > 0).
    :param max_waiting: callers allowed to wait at once; the next one gets
        :class:`~psycopg_pool.TooManyRequests` at once (callers, 0 = no limit).
    :param max_lifetime: a connection older than this, minus up to 5 % jitter, is closed when
        returned (s, > 0).
    :param max_idle: once per ``max_idle``, one connection above ``min_size`` that stayed idle
        throughout is closed: the pool shrinks gradually (s, > 0). psycopg_pool's rule.
    :param reconnect_timeout: how long failed connection attempts are retried, backing off from
        1 s, before giving up (s, > 0). psycopg_pool's scheme.
    :param check: liveness check on checkout: ``"auto"`` checks with one empty query only a
        connection idle for 1 s or more or whose socket has data pending, ``"always"`` checks every
        checkout, ``"never"`` checks none; or a callable taking the :class:`psycopg.Connection` and
        raising if it is broken (psycopg_pool's ``check``, e.g. ``ConnectionPool.check_connection``).
    :param reset: what runs on a returned connection after any open transaction is rolled back:
        ``"safe"`` (``DISCARD ALL``: role, GUCs, advisory locks, temp tables, ``LISTEN``, cursors
        and prepared statements of one borrower never reach the next; where psycopg has prepared
        statements of its own, ``DISCARD ALL``'s parts but those, which stay prepared),
        ``"rollback"`` (nothing more: faster, for code that never changes session state) or a
        callable taking the :class:`psycopg.Connection`, which must leave it idle (psycopg_pool's
        ``reset``).
    :param leak_timeout: log a WARNING with the borrower's stack when a connection is held longer
        than this (s, >= 0; 0 = off). Connections whose borrower ended without giving them back
        are reclaimed whatever this is.
    :param configure: called with each new connection, once (psycopg_pool's ``configure``).
    :param reconnect_failed: called with the pool when connection attempts have failed for
        ``reconnect_timeout`` seconds (psycopg_pool's ``reconnect_failed``).
    :param num_workers: background threads of the psycopg_pool driver (psycopg_pool's
        ``num_workers``, >= 1); the green driver uses greenlets as needed and ignores it.
    :param name: the pool's name in logs and errors (default: the database alias).
    :param driver: ``"auto"`` (gevent's green driver when gevent has monkey-patched ``threading``,
        else the psycopg_pool driver), ``"gevent"`` or ``"thread"``.
    :param pgbouncer: the pool mode of a PgBouncer between the pool and the server: ``"transaction"``,
        ``"session"`` or None (none, the default). Under ``"transaction"`` a connection has no
        session of its own on the server (each transaction may run on another server connection),
        so ``reset="safe"`` does what ``"rollback"`` does: a ``DISCARD ALL`` would reset whichever
        server connection PgBouncer picks for it, another client's state. Under ``"session"`` the
        safe reset stays: PgBouncer runs its ``server_reset_query`` only when a client disconnects,
        and the pool keeps its connections open from one borrower to the next.
    :raises PoolSettingError: for a value of the wrong type or out of range (an
        ``ImproperlyConfigured`` and a ``ValueError``).
    """

    min_size: int | None = None
    max_size: int | None = None
    timeout: float = 30.0
    max_waiting: int = 0
    max_lifetime: float = 3600.0
    max_idle: float = 600.0
    reconnect_timeout: float = 300.0
    check: str | Callable[[Any], None] = "auto"
    reset: str | Callable[[Any], None] = "safe"
    leak_timeout: float = 0.0
    configure: Callable[[Any], None] | None = None
    reconnect_failed: Callable[[Any], None] | None = None
    num_workers: int = 3
    name: str | None = None
    driver: str = "auto"
    pgbouncer: str | None = None

    def __post_init__(self) -> None:
        self._validate(where="hybridpool setting")

    def _validate(self, where: str) -> None:
        if self.max_size is not None:
            check_int(where, "max_size", self.max_size, minimum=1)
        if self.min_size is None:
            default = DEFAULT_MIN_SIZE if self.max_size is None else min(DEFAULT_MIN_SIZE, self.max_size)
            object.__setattr__(self, "min_size", default)
        check_int(where, "min_size", self.min_size, minimum=0)
        if self.max_size is None:
            if self.min_size == 0:  # psycopg_pool refuses it too: a pool of at most 0 connections
                raise setting_error(where, "max_size", None, "set (an int >= 1) when min_size is 0")
            object.__setattr__(self, "max_size", self.min_size)
        check_int(where, "max_size", self.max_size, minimum=cast(int, self.min_size),  # an int by now
                  why=f" (min_size is {self.min_size})")
        check_seconds(where, "timeout", self.timeout)
        check_int(where, "max_waiting", self.max_waiting, minimum=0)
        check_seconds(where, "max_lifetime", self.max_lifetime)
        check_seconds(where, "max_idle", self.max_idle)
        check_seconds(where, "reconnect_timeout", self.reconnect_timeout)
        if type(self.leak_timeout) not in (int, float) or not 0 <= self.leak_timeout < float("inf"):
            raise setting_error(where, "leak_timeout", self.leak_timeout, "a number of seconds >= 0 (0: off)")
        if not callable(self.check):
            check_choice(where, "check", self.check, CHECKS, extra="or a callable taking the connection")
        if not callable(self.reset):
            check_choice(where, "reset", self.reset, RESETS, extra="or a callable taking the connection")
        for key in ("configure", "reconnect_failed"):
            if getattr(self, key) is not None and not callable(getattr(self, key)):
                raise setting_error(where, key, getattr(self, key), "a callable or None")
        check_int(where, "num_workers", self.num_workers, minimum=1)
        if self.name is not None and not isinstance(self.name, str):
            raise setting_error(where, "name", self.name, "a str or None")
        check_choice(where, "driver", self.driver, DRIVERS)
        if self.pgbouncer is not None:
            check_choice(where, "pgbouncer", self.pgbouncer, PGBOUNCER_MODES, extra="or None (no PgBouncer in front)")
        if self.pgbouncer == "transaction" and self.reset == "safe":  # no session to reset: see the docstring
            object.__setattr__(self, "reset", "rollback")

    def resized(self, min_size: int, max_size: int | None = None) -> PoolConfig:
        """This config with other sizes (``max_size`` default: ``min_size``), for ``resize()``.

        :raises PoolSettingError: an impossible size (a ``ValueError``, as psycopg_pool's).
        """
        return dataclasses.replace(self, min_size=min_size, max_size=min_size if max_size is None else max_size)

    @property
    def sizes(self) -> tuple[int, int]:
        """``(min_size, max_size)``: ints once validated (the fields also take None, "the default",
        which validation replaces)."""
        return cast(int, self.min_size), cast(int, self.max_size)

    @classmethod
    def from_django(cls, options: Mapping[str, Any], *, alias: str = "default",
                    health_checks: bool = False) -> PoolConfig:
        """Build the config of database ``alias`` from its DATABASES ``OPTIONS``.

        Reads ``OPTIONS["pool"]`` (``True``, absent, or a dict of the keys above) and the peers'
        settings at the top of ``OPTIONS`` (:func:`hybridpool.migration.translate`).
        ``health_checks`` is the entry's ``CONN_HEALTH_CHECKS``: when true, ``check`` defaults to
        ``"always"``, as Django's pool checks every checkout then.

        :raises ImproperlyConfigured: for an unknown key, a wrong type, an impossible value, or a
            setting given twice; the message names it, e.g.
            ``DATABASES['default']['OPTIONS']['pool']['max_size']``.
        """
        from .migration import translate

        where = f"DATABASES[{alias!r}]['OPTIONS']"
        pool = options.get("pool")
        if pool is True or pool is None:
            pool = {}
        if not isinstance(pool, Mapping):
            raise setting_error(where, "pool", pool, "True or a dict of pool settings")
        migrated, _ = translate(options, where)
        for key in migrated.keys() & pool.keys():
            raise ImproperlyConfigured(f"{where}['pool'][{key!r}] is also set by a setting of another pool"
                                       f" in {where}; keep one of them")
        defaults = {"name": alias, "check": "always"} if health_checks else {"name": alias}
        return cls.from_mapping({**defaults, **migrated, **pool}, where=f"{where}['pool']")

    @classmethod
    def of_alias(cls, options: Mapping[str, Any], *, alias: str, health_checks: bool) -> PoolConfig:
        """:meth:`from_django`, remembered per alias while its ``OPTIONS`` stay equal.

        Django makes a connection wrapper per thread, and so per request under ASGI (asgiref runs
        each request's ORM calls in a thread of its own): reading the settings anew for each
        wrapper would cost every request the parse. A copy of the ``OPTIONS`` read last is kept and
        compared (to the depth of ``OPTIONS["pool"]``), so a setting changed in place, as tests
        do, is read again.

        :raises ImproperlyConfigured: as :meth:`from_django`.
        """
        cached = _configs.get(alias)
        if cached is not None and cached[1] == health_checks and cached[0] == options:
            return cached[2]
        config = cls.from_django(options, alias=alias, health_checks=health_checks)
        snapshot = {key: dict(value) if isinstance(value, Mapping) else value for key, value in options.items()}
        _configs[alias] = (snapshot, health_checks, config)
        return config

    @classmethod
    def from_mapping(cls, options: Mapping[str, Any], *, where: str = "hybridpool setting") -> PoolConfig:
        """Build the config from keyword settings; ``where`` prefixes every error message."""
        known = {f.name for f in dataclasses.fields(cls)}
        for key in options:
            if key in NOT_SETTABLE:
                raise PoolSettingError(
                    f"{setting_name(where, key)}: not a setting with hybridpool: {NOT_SETTABLE[key]}")
            if key not in known:
                raise PoolSettingError(
                    f"{setting_name(where, key)}: unknown setting; allowed: {', '.join(sorted(known))}")
        config = object.__new__(cls)
        for f in dataclasses.fields(cls):
            object.__setattr__(config, f.name, options.get(f.name, f.default))
        config._validate(where=where)
        return config
