"""Django's test runner steps (create, clone for --parallel, destroy) with the alias's pools in use."""

from __future__ import annotations

from django.db import connections


def current_database(alias: str = "testdb") -> str:
    with connections[alias].cursor() as cursor:
        cursor.execute("SELECT current_database()")
        (name,) = cursor.fetchone()
    connections[alias].close()  # back to the pool: it keeps a session on that database
    return name


def test_create_clone_and_destroy_a_test_database_while_pools_hold_sessions():
    wrapper = connections["testdb"]
    original = current_database()
    test_name = wrapper.creation.create_test_db(verbosity=0, autoclobber=True, serialize=False)
    try:
        assert current_database() == test_name  # the pool was rebuilt for the test database
        # Cloning needs the template free of sessions: the pooled one must have been closed.
        wrapper.creation.clone_test_db(suffix="1", verbosity=0)
        clone = wrapper.creation.get_test_db_clone_settings("1")["NAME"]
        assert current_database() == test_name
    finally:
        # Dropping needs the database free of sessions too.
        wrapper.creation.destroy_test_db(verbosity=0, suffix="1")  # as Django's runner: clones first
        wrapper.creation.destroy_test_db(original, verbosity=0)
    assert current_database() == original
    with connections["default"].cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_database WHERE datname IN (%s, %s)", [test_name, clone])
        assert cursor.fetchone() == (0,)
