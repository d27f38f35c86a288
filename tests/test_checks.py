"""System checks: ``manage.py check`` explains misconfigurations (hybridpool.checks)."""

from __future__ import annotations

import pytest
from django.core.management import call_command
from django.core.management.base import SystemCheckError

from hybridpool.checks import check_server_capacity, check_settings

from .conftest import GEVENT


def by_id(messages):
    found: dict[str, list[str]] = {}
    for message in messages:
        found.setdefault(message.id, []).append(message.msg)
    return found


def test_settings_checks_name_each_misconfigured_database():
    found = by_id(check_settings())
    assert found["hybridpool.E001"] == [
        "DATABASES['aged']['CONN_MAX_AGE'] = 60: must be 0 with 'hybridpool.backends.postgresql'"]
    assert len(found["hybridpool.E002"]) == 1
    assert found["hybridpool.E002"][0].startswith("DATABASES['badpool']['OPTIONS']['pool']['max_size'] = '10'")
    assert [msg.split(":")[0] for msg in found["hybridpool.W003"]] == ["DATABASES['atomic']['ATOMIC_REQUESTS'] = True"]


def test_gevent_warning_when_psycopg_would_block_the_hub():
    # "forcedgevent" forces the green driver. Under `python -m gevent.monkey` gevent patched
    # everything before psycopg was imported: no warning. In the plain run nothing is patched.
    found = by_id(check_settings())
    if GEVENT:
        assert "hybridpool.W001" not in found
    else:
        assert found["hybridpool.W001"] == [
            "the green driver serves this process but gevent has not patched select and socket:"
            " psycopg's queries and connects block every greenlet"]


def test_manage_py_check_reports_them():
    with pytest.raises(SystemCheckError) as raised:
        call_command("check", "--tag", "hybridpool")
    report = str(raised.value)
    assert "hybridpool.E001" in report and "hybridpool.E002" in report
    assert "HINT: The pool keeps connections open and lends one per request" in report


def test_capacity_check_compares_all_workers_pools_with_max_connections(monkeypatch):
    monkeypatch.setenv("WEB_CONCURRENCY", "1")
    assert check_server_capacity(databases=["default"]) == []
    monkeypatch.setenv("WEB_CONCURRENCY", "1000")
    (warning,) = check_server_capacity(databases=["default"])
    assert warning.id == "hybridpool.W002"
    assert warning.msg.startswith(
        "DATABASES['default']: max_size=4 x 2 pools per process x 1000 worker processes (WEB_CONCURRENCY) = 8000")


def test_capacity_check_counts_both_pools_of_a_process(monkeypatch):
    from django.db import connections

    with connections["default"].cursor() as cursor:
        cursor.execute("SELECT current_setting('max_connections')::int - current_setting('superuser_reserved_connections')::int")
        (available,) = cursor.fetchone()
    connections["default"].close()
    workers = available // 4  # max_size=4: one pool per worker would fit, two do not
    monkeypatch.setenv("WEB_CONCURRENCY", str(workers))
    (warning,) = check_server_capacity(databases=["default"])
    assert f"= {8 * workers} connections" in warning.msg
