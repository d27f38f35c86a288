"""The peers' settings work unchanged in OPTIONS, read as hybridpool's (hybridpool.migration)."""

from __future__ import annotations

import logging

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.db import connections
from psycopg_pool import ConnectionPool

import hybridpool
from hybridpool import PoolConfig

PEERS = [
    # django-db-geventpool
    ({"MAX_CONNS": 20, "REUSE_CONNS": 10}, {"max_size": 20, "min_size": 10}),
    ({"MAX_CONNS": 2}, {"max_size": 2, "min_size": 2}),
    # django-db-pool
    ({"MAX_CONNS": 3, "MIN_CONNS": 1}, {"max_size": 3, "min_size": 1}),
    # django_pgpool
    ({"maxsize": 2, "maxwait": 0.2, "maxoverflow": 20, "expires": 600},
     {"min_size": 2, "max_size": 20, "timeout": 0.2, "max_idle": 600}),
    ({"maxsize": 6, "maxwait": 0}, {"max_size": 6, "min_size": 4, "timeout": 30.0}),
    # SQLAlchemy-style pools
    ({"pool_size": 5, "max_overflow": 10, "timeout": 20, "recycle": 120, "pre_ping": True},
     {"min_size": 5, "max_size": 15, "timeout": 20, "max_lifetime": 120, "check": "always"}),
    ({"pool_size": 3}, {"min_size": 3, "max_size": 13}),
    # Django's built-in pool
    ({"pool": True}, {"min_size": 4, "max_size": 4}),
    ({"pool": {"min_size": 2, "max_size": 8, "timeout": 10, "check": ConnectionPool.check_connection,
               "num_workers": 2}},
     {"min_size": 2, "max_size": 8, "timeout": 10, "check": ConnectionPool.check_connection, "num_workers": 2}),
]


def test_conn_health_checks_makes_every_checkout_checked_unless_check_is_set():
    assert PoolConfig.from_django({}, health_checks=True).check == "always"
    assert PoolConfig.from_django({"pool": {"check": "auto"}}, health_checks=True).check == "auto"
    assert PoolConfig.from_django({}).check == "auto"


@pytest.mark.parametrize(("options", "expected"), PEERS)
def test_peer_settings_are_read_as_hybridpool_s(options, expected):
    config = PoolConfig.from_django(options)
    assert {key: getattr(config, key) for key in expected} == expected


WRONG = [
    ({"MAX_CONNS": "10"}, "DATABASES['default']['OPTIONS']['MAX_CONNS'] = '10' (str): must be an int >= 1"),
    ({"REUSE_CONNS": 2, "MIN_CONNS": 1}, "REUSE_CONNS and MIN_CONNS both set min_size"),
    ({"maxoverflow": 0}, "['maxoverflow'] = 0 (int): must be an int >= 1"),
    ({"expires": -1}, "['expires'] = -1 (int): must be a number of seconds > 0"),
    ({"recycle": -1}, "['recycle'] = -1 (never): hybridpool renews connections after max_lifetime seconds"),
    ({"pre_ping": "yes"}, "['pre_ping'] = 'yes' (str): must be True or False"),
    ({"pool_size": 0, "max_overflow": 0}, "['max_overflow'] = 0 (int): must be an int >= 1"),
    ({"MAX_CONNS": 5, "maxsize": 5}, "set max_size twice; keep the settings of one pool"),
    ({"MAX_CONNS": 5, "pool": {"max_size": 5}}, "['pool']['max_size'] is also set by a setting of another pool"),
    ({"MAX_CONNS": 2, "REUSE_CONNS": 3}, "['max_size'] = 2 (int): must be an int >= 3 (min_size is 3)"),
]


@pytest.mark.parametrize(("options", "message"), WRONG)
def test_peer_settings_that_cannot_be_honoured_raise_naming_them(options, message):
    with pytest.raises(ImproperlyConfigured) as raised:
        PoolConfig.from_django(options)
    assert message in str(raised.value)


def test_django_entry_with_peer_options_connects_and_logs_the_mapping_once(caplog):
    connections["geventpool"].close_pool()
    with caplog.at_level(logging.INFO, logger="hybridpool"):
        with hybridpool.connection("geventpool") as conn:  # MAX_CONNS is no libpq parameter: not passed on
            assert conn.execute("SELECT 1").fetchone() == (1,)
        with hybridpool.connection("geventpool"):
            pass
    pool = hybridpool.get_pool("geventpool")
    assert (pool.max_size, pool.min_size) == (3, 1)
    notes = [r.getMessage() for r in caplog.records if "read as" in r.getMessage()]
    assert notes == ["DATABASES['geventpool']['OPTIONS']: django-db-geventpool / django-db-pool settings"
                     " MAX_CONNS=3, REUSE_CONNS=1 read as max_size=3, min_size=1"]
