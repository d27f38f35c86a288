"""Test-only settings hook of run.py's ``native`` and ``stock-committed`` configurations.

Imported by their generated settings module, which calls :func:`install`. It does three things,
all in this process (and in every ``--parallel`` worker: forked workers inherit it, spawned ones
import the settings again):

**Every QuerySet reads through NativeQuerySet.** Django's ten bounded async reads (:data:`METHODS`)
on ``django.db.models.query.QuerySet`` are replaced by functions that run NativeQuerySet's own
implementation of the method on a *view* of the queryset: an instance of
``NativeQuerySetView<cls>`` (bases ``NativeQuerySet, DjangoReads, cls``) sharing the queryset's
``__dict__`` (its query, result cache, hints: nothing is copied, whatever the read does to the
view it does to the queryset). In the view's MRO ``DjangoReads`` (Django's original ten functions)
comes right after ``NativeQuerySet``, so NativeQuerySet's fallback (``super(NativeQuerySet,
self).aget(...)``, ``super().afirst``) calls Django's own ``sync_to_async`` method, not the
replacement (which would recurse). A queryset that already is a NativeQuerySet (a model opted in)
gets Django's original directly from the replacement: its own methods are NativeQuerySet's and
their ``super()`` reaches the replacement.

Whether a read then runs natively is NativeQuerySet's decision (``why_not_native``): with
``HYBRIDPOOL_NATIVE=force`` (the ``native`` configuration) the two conditions a test run cannot
meet (a loop served by hybridpool's ASGI application; no enclosing ``async_to_sync``, which Django's
runner wraps every async test in) are skipped. In ``stock-committed`` (stock ENGINE, no forcing)
every read takes the thread path, i.e. Django's original, through the same replacement.

**Test data is committed.** ``TestCase._databases_support_transactions`` answers False, which is
what Django does for a database without transactions: a TestCase opens no class or test
transaction, runs ``setUpTestData`` before each test and flushes the tables after it (as a
TransactionTestCase). Its data is thus committed when a test reads it, visible to a native read
on its own pooled connection (an open test transaction would hide all of it). Only the test
isolation changes: the backend's features (``supports_transactions`` is also read by the SQL
compiler and by ``skipUnlessDBFeature``) are left alone. That flush deletes rows rather than
truncating tables (:func:`_deleting_sql_flush`: the same state for the next test, a tenth of the
time); TransactionTestCase's own flush is Django's.

**The paths are counted.** ``hybridpool.native.why_not_native`` and ``run_native`` are wrapped (at
their module-level names, which ``native_or_thread`` looks up at each call) to count why each read
took the thread path or was retried there, with up to :data:`EXAMPLES` test ids per reason. Each
process appends one JSON line (its pid, ``hybridpool.native.stats``, the calls per method and the
reasons) to the stats file at exit (multiprocessing's exit finalizers: they run in the main
process at interpreter exit and in each pool worker when Django's runner closes the pool); run.py
sums the lines.
"""

from __future__ import annotations

import collections
import functools
import json
import multiprocessing.util
import os
import sys
import threading
import unittest
from typing import Any

#: Django's bounded async reads that NativeQuerySet runs natively.
METHODS = ("aget", "afirst", "alast", "aearliest", "alatest", "acount", "aexists", "acontains", "aaggregate",
           "ain_bulk")
#: Test ids kept per reason.
EXAMPLES = 3

#: Method -> calls through the replacement (whatever path they took).
methods: collections.Counter[str] = collections.Counter()
#: Reason -> count, and reason -> test ids: why reads took the thread path or were retried there.
reasons: collections.Counter[str] = collections.Counter()
examples: dict[str, list[str]] = collections.defaultdict(list)

_installed: str | None = None  #: the stats file, once installed
DJANGO: dict[str, Any] = {}  #: name -> Django's original function


def _current_test() -> str:
    """The id of the test whose code is on the stack (in an async test: its coroutine's frame)."""
    frame = sys._getframe(2)
    while frame is not None:
        candidate = frame.f_locals.get("self")
        if isinstance(candidate, unittest.TestCase):
            return candidate.id()
        frame = frame.f_back
    return "(no test on the stack)"


def _note(reason: str) -> None:
    reasons[reason] += 1
    if len(examples[reason]) < EXAMPLES:
        test = _current_test()
        if test not in examples[reason]:
            examples[reason].append(test)


def _dump(path: str) -> None:
    """Append this process's counts to ``path`` (one line, one write: O_APPEND keeps lines whole)."""
    from hybridpool import native

    line = json.dumps({"pid": os.getpid(), "stats": dict(native.stats), "methods": dict(methods),
                       "reasons": dict(reasons), "examples": dict(examples)}) + "\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


class _AfterFork:
    """The object multiprocessing's after-fork registry holds (it must be weakly referable)."""

    def __call__(self) -> None:  # in a forked worker: count its own reads, dump them at its exit
        from hybridpool import native

        native.stats.clear()
        methods.clear()
        reasons.clear()
        examples.clear()
        multiprocessing.util.Finalize(None, _dump, args=(_installed,), exitpriority=100)


_after_fork = _AfterFork()


def _replacement(name: str) -> Any:
    from hybridpool.native import NativeQuerySet

    original = DJANGO[name]
    implementation = getattr(NativeQuerySet, name)

    @functools.wraps(original)
    async def read(self: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(self, NativeQuerySet):  # opted in: NativeQuerySet's method is calling super()
            return await original(self, *args, **kwargs)
        methods[name] += 1
        return await implementation(view(self), *args, **kwargs)

    read.__qualname__ = f"QuerySet.{name}"
    return read


_view_classes: dict[type, type] = {}


def view(queryset: Any) -> Any:
    """``queryset`` as a NativeQuerySet whose ``super()`` reaches Django's originals: same state
    (the very same ``__dict__``), another class."""
    from hybridpool.native import NativeQuerySet

    cls = type(queryset)
    view_class = _view_classes.get(cls)
    if view_class is None:
        view_class = _view_classes[cls] = type(f"NativeQuerySetView{cls.__name__}", (NativeQuerySet, DjangoReads, cls),
                                               {"__module__": __name__})
    instance = object.__new__(view_class)
    instance.__dict__ = queryset.__dict__
    return instance


class DjangoReads:
    """Django's original ten reads (filled by :func:`install`), after NativeQuerySet in a view's MRO."""


_flushing = threading.local()


def _deleting_fixture_teardown(self: Any) -> None:
    """TestCase's teardown without transactions (TransactionTestCase's: flush, then post_migrate),
    its flush deleting rows instead of truncating tables (:func:`_deleting_sql_flush`)."""
    from django.test import TransactionTestCase

    _flushing.delete = True
    try:
        TransactionTestCase._fixture_teardown(self)
    finally:
        _flushing.delete = False


def _deleting_sql_flush(sql_flush: Any) -> Any:
    """PostgreSQL's ``sql_flush``, giving ``DELETE FROM t;`` per table during a TestCase's teardown.

    Django's ``TRUNCATE t1, t2, ...`` of all the suite's tables costs about 0.3 s on a 2-core
    machine (it replaces every table's files), which would more than double the run; deleting the
    rows of nearly empty tables costs about 10 ms. The result is the same for the next test (empty
    tables; the sequences are not reset either way). ``flush`` runs the statements in one
    transaction and Django's foreign keys are ``DEFERRABLE INITIALLY DEFERRED``, so their order
    does not matter; unlike TRUNCATE (without CASCADE), DELETE does not refuse a table that a
    table left out of the flush references (auth.User's tables while a test swaps AUTH_USER_MODEL
    reference auth_permission)."""

    @functools.wraps(sql_flush)
    def flush(self: Any, style: Any, tables: Any, *, reset_sequences: bool = False, allow_cascade: bool = False) -> Any:
        if not getattr(_flushing, "delete", False) or reset_sequences:
            return sql_flush(self, style, tables, reset_sequences=reset_sequences, allow_cascade=allow_cascade)
        return [f"{style.SQL_KEYWORD('DELETE FROM')} {style.SQL_FIELD(self.quote_name(table))};" for table in tables]

    return flush


def install(stats_file: str) -> None:
    """Patch this process (once): QuerySet's reads, TestCase's isolation, the counting and the dump."""
    global _installed
    if _installed is not None:
        return
    from django.db.backends.postgresql.operations import DatabaseOperations as PostgresOperations
    from django.db.models.query import QuerySet
    from django.test import TestCase

    from hybridpool import native

    for name in METHODS:
        DJANGO[name] = QuerySet.__dict__[name]
        setattr(DjangoReads, name, DJANGO[name])
    for name in METHODS:
        setattr(QuerySet, name, _replacement(name))

    TestCase._databases_support_transactions = classmethod(lambda cls: False)
    TestCase._fixture_teardown = _deleting_fixture_teardown
    PostgresOperations.sql_flush = _deleting_sql_flush(PostgresOperations.sql_flush)

    why_not_native, run_native = native.why_not_native, native.run_native

    def counted_why_not_native(queryset: Any) -> str | None:
        reason = why_not_native(queryset)
        if reason is not None:
            _note(f"thread: {reason}")
        return reason

    async def counted_run_native(alias: str, function: Any) -> Any:
        try:
            return await run_native(alias, function)
        except native.SynchronousOnlyOperation as ex:
            _note(f"retried: SynchronousOnlyOperation: {str(ex)[:200]}")
            raise
        except Exception as ex:
            if not getattr(ex, "hybridpool_queried", True):
                _note(f"retried: {type(ex).__name__} before any query: {str(ex)[:200]}")
            raise

    native.why_not_native = counted_why_not_native
    native.run_native = counted_run_native

    _installed = stats_file
    multiprocessing.util.Finalize(None, _dump, args=(stats_file,), exitpriority=100)
    multiprocessing.util.register_after_fork(_after_fork, lambda hook: hook())
