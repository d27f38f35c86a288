"""Where hybridpool's drivers knowingly differ from psycopg_pool, as psycopg_pool's own tests see it.

Each entry maps ``(configurations, test)`` to the reason; ``test`` is a test's name in its module (with or
without its parameters). The plugin marks those tests ``xfail(strict=True)``: a listed test that
passes fails the run; those whose outcome depends on timing (:data:`NOT_STRICT`) are not strict.
"""

from __future__ import annotations

#: hybridpool has no null pool (a pool that keeps no connection): its variants are not collected.
NO_NULL_POOL = "NullConnectionPool"

#: The configurations of ``run.py``: the psycopg_pool driver plainly and under gevent's patching,
#: the green driver (patched).
ALL = ("thread", "thread-gev", "gevent")
PATCHED = ("thread-gev", "gevent")
GREEN = ("gevent",)

AUTOCOMMIT = ("Pooled connections are in autocommit, as Django's are (hybridpool forces kwargs['autocommit']):"
              " a statement opens no transaction, so the state these tests build never arises.")
CLOSE_RETURNS = ("close() on a lent connection gives it back to the pool (psycopg_pool's close_returns=True,"
                 " always: it is how Django returns a connection), so it is not closed, and the end of its"
                 " connection() block then refuses a second return with psycopg_pool's ValueError.")
NO_BACKOFF = ("A connection that fails its check at checkout is replaced at once, within the caller's timeout"
              " (a healthy replacement is what the caller waits for), where psycopg_pool sleeps 0.1 s, 0.2 s,"
              " ... between two failed checks; its log line is hybridpool's.")
NO_BACKOFF_IDLE = ("A connection that fails its check at checkout is replaced at once (see test_check_backoff's"
                   " reason): whether a connection sits idle in the pool when the caller's timeout expires, which"
                   " the test reads, depends on when the last replacement finished connecting.")
EXPLICIT_OPEN = ("hybridpool's pools are opened explicitly (create_pool(open=True), the default, or open()):"
                 " psycopg_pool's deprecation of a pool opened implicitly by its constructor does not apply.")
PRIVATE = ("The test reads or patches psycopg_pool's private machinery (scheduler, worker threads, tasks,"
           " waiting queue, helpers), which the green driver does not have: it runs on greenlets.")
NUM_WORKERS = ("The green driver opens connections concurrently, each in a greenlet of its own: num_workers,"
               " which the test sets to 1 to make filling slow, has no effect there (on a loaded machine the"
               " concurrent connects may still take longer than the test's 0.3 s).")
LIFO = ("The green driver's idle connections are a LIFO stack (the most recently returned is lent first),"
        " so that the surplus sinks to the bottom and can go after max_idle; psycopg_pool's is a queue.")
HARD_MAX = ("max_size is a hard cap: resize() to a smaller max_size closes the idle connections above it at"
            " once, where psycopg_pool lets them go one per max_idle period.")
GREEN_LOGS = ("The green driver's first log line when the server goes away is its failed connection attempt;"
              " psycopg_pool's is the broken connection it discards, a line the green driver writes later.")
IDLE_EXPIRY = ("The green driver also closes idle connections past max_lifetime at its maintenance pass (every"
               " max_lifetime/2 s at most), where psycopg_pool closes them only when returned: whether the"
               " test's second checkout gets the first connection depends on when the pass runs.")
READ_ONLY_EVENT = ("The test replaces the wait() of psycopg_pool's scheduler's Event, which under gevent's"
                   " patching is gevent's, whose attributes are read-only: the test cannot run there.")

#: Differences whose test may pass or fail by timing: marked ``xfail`` without ``strict``.
NOT_STRICT = {IDLE_EXPIRY, NO_BACKOFF_IDLE, NUM_WORKERS}

DIFFERENCES: dict[tuple[tuple[str, ...], str], str] = {
    (ALL, "test_intrans_rollback"): AUTOCOMMIT,
    (ALL, "test_inerror_rollback"): AUTOCOMMIT,
    (ALL, "test_fail_rollback_close"): AUTOCOMMIT,
    (ALL, "test_reset_badstate"): AUTOCOMMIT,
    (ALL, "test_configure_badstate"): AUTOCOMMIT,
    (ALL, "test_configure"): CLOSE_RETURNS,
    (ALL, "test_broken_reconnect"): CLOSE_RETURNS,
    (ALL, "test_stats_usage"): CLOSE_RETURNS,
    (ALL, "test_check_backoff"): NO_BACKOFF,
    (ALL, "test_check_returns_an_ok_connection"): NO_BACKOFF_IDLE,
    (ALL, "test_create_warning"): EXPLICIT_OPEN,
    (GREEN, "test_concurrent_filling"): PRIVATE,
    (GREEN, "test_shrink"): PRIVATE,
    (GREEN, "test_close_no_tasks"): PRIVATE,
    (GREEN, "test_del_stops_threads"): PRIVATE,
    (GREEN, "test_closed_queue"): PRIVATE,
    (GREEN, "test_reopen"): PRIVATE,
    (GREEN, "test_jitter"): PRIVATE,
    (GREEN, "test_wait_ready"): NUM_WORKERS,
    (GREEN, "test_open_wait"): NUM_WORKERS,
    (GREEN, "test_open_as_wait"): NUM_WORKERS,
    (GREEN, "test_uniform_use"): LIFO,
    (GREEN, "test_resize"): HARD_MAX,
    (GREEN, "test_max_lifetime"): IDLE_EXPIRY,
    (GREEN, "test_reconnect"): GREEN_LOGS,
    (PATCHED, "test_empty_queue_timeout"): READ_ONLY_EVENT,
    (PATCHED, "test_first_task_rescheduling"): READ_ONLY_EVENT,
}
