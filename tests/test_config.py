"""Settings validation, and the I/O-free decisions of ``Capacity`` and ``Leases`` (no database needed)."""

from __future__ import annotations

import copy
import threading

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.db import connections

from hybridpool import PoolConfig, create_pool
from hybridpool.capacity import Backoff, Capacity
from hybridpool.leases import Leases

INVALID = [
    ({"min_size": -1}, "min_size", "= -1 (int): must be an int >= 0"),
    ({"max_size": 0}, "max_size", "= 0 (int): must be an int >= 1"),
    ({"max_size": "10"}, "max_size", "= '10' (str): must be an int >= 1"),
    ({"min_size": 5, "max_size": 2}, "max_size", "= 2 (int): must be an int >= 5 (min_size is 5)"),
    ({"min_size": 0}, "max_size", "= None (NoneType): must be set (an int >= 1) when min_size is 0"),
    ({"min_size": True}, "min_size", "= True (bool): must be an int >= 0"),
    ({"timeout": 0}, "timeout", "= 0 (int): must be a number of seconds > 0"),
    ({"timeout": -1.5}, "timeout", "= -1.5 (float): must be a number of seconds > 0"),
    ({"timeout": "5"}, "timeout", "= '5' (str): must be a number of seconds > 0"),
    ({"timeout": float("inf")}, "timeout", "= inf (float): must be a number of seconds > 0"),
    ({"max_waiting": -1}, "max_waiting", "= -1 (int): must be an int >= 0"),
    ({"max_lifetime": 0}, "max_lifetime", "= 0 (int): must be a number of seconds > 0"),
    ({"max_idle": -3}, "max_idle", "= -3 (int): must be a number of seconds > 0"),
    ({"reconnect_timeout": None}, "reconnect_timeout", "= None (NoneType): must be a number of seconds > 0"),
    ({"check": "sometimes"}, "check", "= 'sometimes' (str): must be 'auto' or 'always' or 'never'"),
    ({"reset": "discard"}, "reset", "= 'discard' (str): must be 'safe' or 'rollback' or a callable"),
    ({"driver": "eventlet"}, "driver", "= 'eventlet' (str): must be 'auto' or 'gevent' or 'thread'"),
    ({"check": True}, "check", "= True (bool): must be 'auto' or 'always' or 'never' or a callable"),
    ({"configure": "setup"}, "configure", "= 'setup' (str): must be a callable or None"),
    ({"num_workers": 0}, "num_workers", "= 0 (int): must be an int >= 1"),
    ({"name": 5}, "name", "= 5 (int): must be a str or None"),
    ({"nonsense": 1}, "nonsense", ": unknown setting; allowed: check, configure, driver, leak_timeout, max_idle"),
    ({"leak_timeout": -1}, "leak_timeout", "= -1 (int): must be a number of seconds >= 0 (0: off)"),
]


#: psycopg_pool arguments Django's built-in pool passed on, that hybridpool sets itself.
NOT_SETTABLE = [
    ({"kwargs": {}}, "kwargs", ": not a setting with hybridpool: the connection arguments come from"),
    ({"open": True}, "open", ": not a setting with hybridpool: hybridpool opens a pool at its first use"),
    ({"connection_class": object}, "connection_class", ": not a setting with hybridpool: Django's backend needs"),
]


@pytest.mark.parametrize(("settings", "key", "message"), INVALID + NOT_SETTABLE)
def test_invalid_django_pool_option_names_key_value_and_what_is_allowed(settings, key, message):
    with pytest.raises(ImproperlyConfigured) as raised:
        PoolConfig.from_django({"pool": settings}, alias="replica")
    assert str(raised.value).startswith(f"DATABASES['replica']['OPTIONS']['pool'][{key!r}]")
    assert message in str(raised.value)


@pytest.mark.parametrize(("settings", "key", "message"), INVALID)
def test_invalid_keyword_is_refused_before_any_connection(settings, key, message):
    with pytest.raises(ValueError) as raised:  # and ImproperlyConfigured: psycopg_pool's error and Django's
        create_pool("host=/nonexistent", **settings)
    assert isinstance(raised.value, ImproperlyConfigured)
    assert repr(key) in str(raised.value)
    assert message in str(raised.value)


def test_a_check_in_the_pool_options_takes_precedence_over_conn_health_checks():
    def custom_check(conn):  # Django 6.1's rule (#37075): the pool's own check wins
        pass

    assert PoolConfig.from_django({"pool": {"check": custom_check}}, health_checks=True).check is custom_check
    assert PoolConfig.from_django({"pool": {"check": "never"}}, health_checks=True).check == "never"
    assert PoolConfig.from_django({"pool": True}, health_checks=True).check == "always"
    assert PoolConfig.from_django({"pool": True}, health_checks=False).check == "auto"


def test_the_options_dict_is_never_mutated():
    """Django 6.1 no longer mutates a database's OPTIONS (it copies before popping "pool"); neither
    does hybridpool, reading them or connecting with them."""
    options = {"pool": {"min_size": 1, "max_size": 2, "check": "never", "reset": "rollback"},
               "application_name": "frozen", "server_side_binding": False}
    before = copy.deepcopy(options)
    PoolConfig.from_django(options, alias="frozen", health_checks=True)
    PoolConfig.of_alias(options, alias="frozen", health_checks=False)
    assert options == before
    settings_dict = connections["default"].settings_dict
    before = copy.deepcopy(settings_dict["OPTIONS"])
    with connections["default"].cursor() as cursor:
        cursor.execute("SELECT 1")
    connections["default"].close()
    assert settings_dict["OPTIONS"] == before


def test_pool_option_must_be_true_or_a_dict():
    with pytest.raises(ImproperlyConfigured, match=r"\['pool'\] = 'yes' \(str\): must be True or a dict"):
        PoolConfig.from_django({"pool": "yes"})


def test_defaults_are_psycopg_pool_s():
    config = PoolConfig.from_django({"pool": True}, alias="replica")
    assert (config.min_size, config.max_size, config.timeout, config.name) == (4, 4, 30.0, "replica")
    assert (config.max_lifetime, config.max_idle, config.reset, config.driver) == (3600.0, 600.0, "safe", "auto")


def test_a_max_size_below_four_lowers_the_default_min_size():
    assert (PoolConfig(max_size=2).min_size, PoolConfig(max_size=20).min_size) == (2, 4)


def test_conn_max_age_other_than_zero_is_refused_at_first_use():
    with pytest.raises(ImproperlyConfigured, match=r"Pooling doesn't support persistent connections. DATABASES\['aged'\]\['CONN_MAX_AGE'\] = 60 must be 0") as raised:
        connections["aged"].ensure_connection()
    assert "lends one per request" in str(raised.value)


def test_bad_pool_setting_in_databases_is_refused_at_first_use():
    with pytest.raises(ImproperlyConfigured, match=r"DATABASES\['badpool'\]\['OPTIONS'\]\['pool'\]\['max_size'\] = '10'"):
        connections["badpool"].ensure_connection()


def test_the_config_of_an_alias_is_read_once_and_again_when_its_options_change():
    options = {"pool": {"max_size": 3}}
    first = PoolConfig.of_alias(options, alias="once", health_checks=False)
    assert PoolConfig.of_alias({"pool": {"max_size": 3}}, alias="once", health_checks=False) is first
    options["pool"]["max_size"] = 4  # changed in place, as tests do
    assert PoolConfig.of_alias(options, alias="once", health_checks=False).max_size == 4
    assert PoolConfig.of_alias(options, alias="once", health_checks=True).check == "always"


# -- Capacity: the decisions every driver shares


def test_a_returned_connection_goes_to_the_oldest_waiter_not_to_a_newcomer():
    cap = Capacity(min_size=0, max_size=1)
    assert cap.grow() is False  # nobody waits: nothing to open
    assert cap.enqueue("first") and cap.enqueue("second")
    assert cap.grow() is True and cap.nconns == 1
    assert cap.put("conn") == "first"
    assert cap.take() is None  # "second" still waits: a newcomer gets nothing
    assert cap.put("conn") == "second"
    assert cap.put("conn") is None and cap.take() == "conn"


def test_take_passes_over_connections_just_returned_for_a_settled_one():
    cap = Capacity(min_size=0, max_size=4)
    cap.idle = ["settled-old", "settled", "fresh-old", "fresh"]  # LIFO: the newest on top
    settled = {"settled-old", "settled"}.__contains__
    assert cap.take(settled) == "settled"  # the most recent settled one, not the top
    assert cap.take() == "fresh"  # no predicate: the top
    cap.idle = ["fresh-old", "fresh"]
    assert cap.take(settled) == "fresh-old"  # none settled: the oldest return, the nearest to it
    assert cap.idle == ["fresh"]


def test_growth_is_one_at_a_time_and_never_past_max_size():
    cap = Capacity(min_size=0, max_size=2)
    for waiter in "abc":
        cap.enqueue(waiter)
    assert cap.grow() is True
    assert cap.grow() is False  # one growth at a time
    assert cap.growth_ended() is True  # callers still wait: the next step is reserved
    assert cap.growth_ended() is False  # max_size reached
    assert cap.nconns == 2


def test_fill_reserves_min_size_once():
    cap = Capacity(min_size=3, max_size=5)
    assert cap.fill() == 3
    assert cap.fill() == 0
    cap.release()
    assert cap.fill() == 1


def test_max_waiting_refuses_the_caller_past_it():
    cap = Capacity(min_size=0, max_size=1, max_waiting=2)
    assert cap.enqueue("a") and cap.enqueue("b")
    assert not cap.enqueue("c")
    assert cap.cancel("a") and not cap.cancel("a")
    assert cap.enqueue("c")


def test_shrink_closes_one_connection_per_period_unused_throughout_and_keeps_min_size():
    cap = Capacity(min_size=1, max_size=4)
    cap.nconns = 3
    cap.idle = ["oldest", "old", "new"]  # LIFO: the longest idle at the bottom
    assert cap.shrink() is None  # the first period starts: nothing measured yet
    assert cap.shrink() == "oldest"  # three stayed idle throughout: one goes, one per period
    assert (cap.idle, cap.nconns) == (["old", "new"], 2)
    cap.take()  # "new" is lent
    cap.take()  # and "old": the stack emptied during this period
    cap.put("old")
    assert cap.shrink() is None
    cap.put("new")
    assert cap.shrink() == "old"  # "old" stayed idle through the period
    assert cap.shrink() is None  # min_size kept
    assert (cap.idle, cap.nconns) == (["new"], 1)


def test_backoff_doubles_from_one_second_with_jitter_then_gives_up():
    backoff = Backoff(timeout=10.0)
    first = backoff.failed(now=0.0)
    assert 0.9 <= first <= 1.1
    assert backoff.failed(now=1.0) == pytest.approx(2 * first)
    assert backoff.failed(now=3.0) == pytest.approx(4 * first)
    assert backoff.failed(now=9.0) == pytest.approx(1.0)  # capped at the give-up time
    assert backoff.failed(now=10.0) is None


def test_filling_stops_after_giving_up_until_a_connection_opens():
    cap: Capacity[str, str] = Capacity(min_size=2, max_size=4)
    assert cap.fill() == 2
    cap.connect_failed(growing=False)
    cap.connect_failed(growing=False)  # both connects failed for reconnect_timeout
    cap.stop_filling()
    assert cap.fill() == 0  # no background retry loop
    assert cap.enqueue("caller") and cap.grow()  # a caller's demand still opens one
    cap.connected()
    assert cap.opened == 1 and not cap.filled
    assert cap.fill() == 1  # min_size again, counting the one opened


# -- Leases: who holds what


def test_an_ending_thread_wakes_the_pool_only_if_it_still_holds_a_connection():
    woken = threading.Event()
    leases = Leases(leak_timeout=0, wake=woken.set)
    returned, kept = object(), object()

    def borrow(conn: object, give_back: bool) -> None:
        leases.lend(conn)
        if give_back:
            leases.end(conn)

    for conn, give_back in ((returned, True), (kept, False)):
        thread = threading.Thread(target=borrow, args=(conn, give_back))
        thread.start()
        thread.join(5)
        if give_back:
            assert not woken.wait(0.3)  # as every ASGI request thread: nothing to take back
    assert woken.wait(5)
    assert [lease.conn for lease in leases.pop_strays()] == [kept]
