"""How a setting is checked, and the error a wrong one raises: shared by :mod:`hybridpool.config`
(hybridpool's settings) and :mod:`hybridpool.migration` (the peers' settings, read as hybridpool's).

Every error names the setting where it was given (``where``: ``DATABASES['default']['OPTIONS']['pool']``
or ``hybridpool setting``), the value and what is allowed.
"""

from __future__ import annotations

from typing import Any, cast

from django.core.exceptions import ImproperlyConfigured


class PoolSettingError(ImproperlyConfigured, ValueError):
    """A pool setting with a wrong value: Django's :class:`ImproperlyConfigured`, and the
    :class:`ValueError` psycopg_pool raises for a wrong argument, so that code written for either
    catches it."""


def setting_name(where: str, key: str) -> str:
    """How setting ``key`` of ``where`` is named in an error: ``where['key']`` or ``where 'key'``."""
    return f"{where}[{key!r}]" if where.endswith("]") else f"{where} {key!r}"


def setting_error(where: str, key: str, value: Any, allowed: str) -> PoolSettingError:
    """The error for setting ``key`` of ``where`` having ``value``: it must be ``allowed``."""
    return PoolSettingError(f"{setting_name(where, key)} = {value!r} ({type(value).__name__}): must be {allowed}")


def check_int(where: str, key: str, value: Any, *, minimum: int, why: str = "") -> int:
    """Return ``value`` if it is an int (not a bool) >= ``minimum``; else raise :func:`setting_error`."""
    if type(value) is not int or value < minimum:
        raise setting_error(where, key, value, f"an int >= {minimum}{why}")
    return value


def check_seconds(where: str, key: str, value: Any, *, zero: bool = False) -> float:
    """Return ``value`` if it is a finite number of seconds > 0 (>= 0 with ``zero``); else raise
    :func:`setting_error`."""
    if type(value) not in (int, float) or not (0 <= value if zero else 0 < value) or value == float("inf"):
        raise setting_error(where, key, value, f"a number of seconds {'>=' if zero else '>'} 0 (int or float)")
    return cast(float, value)


def check_choice(where: str, key: str, value: Any, allowed: tuple[str, ...], extra: str = "") -> None:
    """Raise :func:`setting_error` unless ``value`` is one of the strings ``allowed``."""
    if not isinstance(value, str) or value not in allowed:
        choices = " or ".join(repr(a) for a in allowed)
        raise setting_error(where, key, value, f"{choices} {extra}".strip())
