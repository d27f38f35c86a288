"""The settings of the pools hybridpool replaces, read as hybridpool's.

Each of them read its settings from the top level of ``DATABASES[alias]["OPTIONS"]``; they keep
working there, unchanged, so that moving to hybridpool is a change of ENGINE. :func:`translate`
turns them into :class:`~hybridpool.PoolConfig` keys and says, in one line per peer, what it read
as what. Their values are checked here, under their own names; a setting whose meaning hybridpool
cannot honour raises, saying why and what to write instead.

| peer | its setting | hybridpool |
|---|---|---|
| django-db-geventpool | ``MAX_CONNS`` / ``REUSE_CONNS`` | ``max_size`` / ``min_size`` |
| django-db-pool | ``MAX_CONNS`` / ``MIN_CONNS`` | ``max_size`` / ``min_size`` |
| django_pgpool | ``maxoverflow`` (hard limit) | ``max_size`` |
| | ``maxsize`` (connections kept) | ``min_size``; ``max_size`` without ``maxoverflow`` |
| | ``maxwait`` / ``expires`` | ``timeout`` (0: nothing) / ``max_idle`` |
| SQLAlchemy-style pools | ``pool_size`` / ``max_overflow`` | ``min_size`` / ``max_size = pool_size + max_overflow`` |
| | ``timeout`` / ``recycle`` / ``pre_ping`` | ``timeout`` / ``max_lifetime`` / ``check`` (``True``: ``"always"``) |
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from django.core.exceptions import ImproperlyConfigured

from .validation import check_int, check_seconds, setting_error

#: SQLAlchemy's QueuePool defaults, for a ``pool_size`` or ``max_overflow`` given alone.
SQLALCHEMY_POOL_SIZE = 5
SQLALCHEMY_MAX_OVERFLOW = 10


def _geventpool(source: dict[str, Any], where: str) -> dict[str, Any]:
    if "REUSE_CONNS" in source and "MIN_CONNS" in source:
        raise ImproperlyConfigured(f"{where}: REUSE_CONNS and MIN_CONNS both set min_size; keep one of them")
    settings = {}
    if "MAX_CONNS" in source:
        settings["max_size"] = check_int(where, "MAX_CONNS", source["MAX_CONNS"], minimum=1)
    for key in ("REUSE_CONNS", "MIN_CONNS"):
        if key in source:
            settings["min_size"] = check_int(where, key, source[key], minimum=0)
    return settings


def _pgpool(source: dict[str, Any], where: str) -> dict[str, Any]:
    settings: dict[str, float] = {}
    if "maxoverflow" in source:
        settings["max_size"] = check_int(where, "maxoverflow", source["maxoverflow"], minimum=1)
        if "maxsize" in source:
            settings["min_size"] = check_int(where, "maxsize", source["maxsize"], minimum=0)
    elif "maxsize" in source:
        settings["max_size"] = check_int(where, "maxsize", source["maxsize"], minimum=1)
    # django_pgpool waited maxwait seconds before opening a connection beyond maxsize; hybridpool
    # never waits below max_size, so maxwait=0 asks for what it always does.
    if source.get("maxwait", 0) != 0:
        settings["timeout"] = check_seconds(where, "maxwait", source["maxwait"])
    if "expires" in source:
        settings["max_idle"] = check_seconds(where, "expires", source["expires"])
    return settings


def _sqlalchemy(source: dict[str, Any], where: str) -> dict[str, Any]:
    settings: dict[str, Any] = {}
    if "pool_size" in source or "max_overflow" in source:
        pool_size = check_int(where, "pool_size", source.get("pool_size", SQLALCHEMY_POOL_SIZE), minimum=0)
        overflow = check_int(where, "max_overflow", source.get("max_overflow", SQLALCHEMY_MAX_OVERFLOW),
                             minimum=0 if pool_size else 1)
        settings.update(min_size=pool_size, max_size=pool_size + overflow)
    if "timeout" in source:
        settings["timeout"] = check_seconds(where, "timeout", source["timeout"])
    if source.get("recycle") == -1:
        raise ImproperlyConfigured(
            f"{where}['recycle'] = -1 (never): hybridpool renews connections after max_lifetime seconds"
            " (default 3600); remove 'recycle' or give a number of seconds"
        )
    if "recycle" in source:
        settings["max_lifetime"] = check_seconds(where, "recycle", source["recycle"])
    if "pre_ping" in source:
        if type(source["pre_ping"]) is not bool:
            raise setting_error(where, "pre_ping", source["pre_ping"], "True or False")
        settings["check"] = "always" if source["pre_ping"] else "auto"
    return settings


#: Each peer: its name, the settings it read at the top of OPTIONS (none is a libpq parameter),
#: and how they read as hybridpool's.
PEERS: tuple[tuple[str, frozenset[str], Callable[[dict[str, Any], str], dict[str, Any]]], ...] = (
    ("django-db-geventpool / django-db-pool", frozenset({"MAX_CONNS", "REUSE_CONNS", "MIN_CONNS"}), _geventpool),
    ("django_pgpool", frozenset({"maxsize", "maxoverflow", "maxwait", "expires"}), _pgpool),
    ("SQLAlchemy-style pool", frozenset({"pool_size", "max_overflow", "timeout", "recycle", "pre_ping"}), _sqlalchemy),
)
PEER_KEYS = frozenset().union(*(keys for _, keys, _ in PEERS))


def translate(options: Mapping[str, Any], where: str) -> tuple[dict[str, Any], list[str]]:
    """Read the peers' settings at the top of ``options`` (a DATABASES entry's OPTIONS).

    :param where: how to name ``options`` in messages, e.g. ``"DATABASES['default']['OPTIONS']"``.
    :returns: the PoolConfig settings they mean, and one line per peer saying what was read as what.
    :raises ImproperlyConfigured: for a wrong value, or two settings that say the same thing.
    """
    settings: dict[str, Any] = {}
    notes = []
    for peer, keys, read in PEERS:
        source = {key: options[key] for key in sorted(keys) if key in options}
        if not source:
            continue
        meant = read(source, where)
        if twice := meant.keys() & settings.keys():
            raise ImproperlyConfigured(f"{where}: {', '.join(sorted(PEER_KEYS & options.keys()))} set"
                                       f" {', '.join(sorted(twice))} twice; keep the settings of one pool")
        settings.update(meant)
        given = ", ".join(f"{key}={value!r}" for key, value in source.items())
        read_as = ", ".join(f"{key}={value!r}" for key, value in meant.items()) or "nothing"
        notes.append(f"{peer} settings {given} read as {read_as}")
    return settings, notes
