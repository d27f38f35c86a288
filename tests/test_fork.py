"""Fork safety: a child never uses nor closes a connection of its parent (gunicorn ``preload_app``)."""

from __future__ import annotations

import os

from django.db import connection

import hybridpool

CHILD_OK = 0


def _child(parent_backend: int) -> int:
    """In the child: the inherited connection is gone, and the ORM works on a pool of its own."""
    if connection.connection is not None:
        return 10
    pool = hybridpool.get_pool()
    if pool.pid != os.getpid():
        return 11
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        if cursor.fetchone()[0] == parent_backend:
            return 12
    connection.close()
    hybridpool.close_all()
    return CHILD_OK


def test_forked_child_uses_its_own_pool_and_leaves_the_parent_s_connection_alone():
    parent_pool = hybridpool.get_pool()
    with hybridpool.connection() as conn:
        parent_backend = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
        child = os.fork()
        if child == 0:
            code = 99
            try:
                code = _child(parent_backend)
            finally:
                os._exit(code)
        _, status = os.waitpid(child, 0)
        assert os.waitstatus_to_exitcode(status) == CHILD_OK
        # The child neither closed nor used the parent's connection.
        assert conn.execute("SELECT pg_backend_pid()").fetchone()[0] == parent_backend
    assert hybridpool.get_pool() is parent_pool
