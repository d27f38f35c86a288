"""The TEST_RUNNER of the generated settings: Django's DiscoverRunner, writing every outcome to JSON.

``runtests.py`` builds its runner with ``get_runner(settings)``. With ``--parallel`` Django replays
each worker's results into the main process's result object, so the main process records every
test. The file named by the ``DJANGO_SUITE_RESULTS`` setting gets ``outcomes`` (test id ->
``ok``, ``FAIL``, ``ERROR``, ``skipped``, ``expected failure``, ``unexpected success``),
``tracebacks`` (test id -> text, for the failed ones) and, if dropping the test databases failed,
``teardown_error``. (The result class replaces those of runtests.py's ``--debug-sql`` and
``--pdb``, which the suite does not use.)

**Watchdog.** Every process that runs tests (the main one serially, each worker of ``--parallel``)
arms a timer for each test, and for each class's ``setUpClass`` and ``tearDownClass`` (a test whose
set-up hangs never reaches ``startTest``): ``DJANGO_SUITE_TEST_TIMEOUT`` seconds (the setting, or the
environment variable of that name; 0 turns it off). The timer is a native thread, so it fires
under gevent's patching too, whatever the hung greenlet or thread waits on. When it fires, it
writes ``HUNG in <test id>`` and the stacks of all threads (``faulthandler.dump_traceback``; under
gevent also every greenlet's) to the process's stderr, which is the run's log, adds the test to
the results file under ``hung``, and ends the run: a worker signals the main process (``SIGUSR1``),
which writes the outcomes it has and exits with status 3, killing its workers; a main process that
does not answer within :data:`ANSWER_SECONDS` is killed.
"""

from __future__ import annotations

import faulthandler
import importlib
import json
import multiprocessing
import os
import signal
import sys
import unittest
from pathlib import Path
from time import monotonic
from typing import Any

from django.conf import settings
from django.test.runner import DiscoverRunner, ParallelTestSuite, RemoteTestResult, RemoteTestRunner

#: Outcomes that count as not passing.
BAD = ("FAIL", "ERROR", "unexpected success", "hung")

#: Seconds a test (or a class's set-up or tear-down) may take before the watchdog ends the run.
DEFAULT_TEST_TIMEOUT = 120.0
#: The environment variable naming the main process of the run, for the workers' watchdogs.
MAIN_PID = "DJANGO_SUITE_MAIN_PID"
#: Seconds a worker whose watchdog fired waits for the main process to end the run, then kills it.
ANSWER_SECONDS = 10.0
#: The exit status of a run ended by the watchdog.
HUNG_STATUS = 3


def _original(module: str, name: str) -> Any:
    """``module.name`` as it was before gevent's monkey-patching, if gevent patched ``module``."""
    monkey = sys.modules.get("gevent.monkey")
    if monkey is not None and monkey.is_module_patched(module):
        return monkey.get_original(module, name)
    return getattr(importlib.import_module(module), name)


class Watchdog:
    """One timer per process, re-armed at each step of the tests it runs.

    Armed only between :meth:`start` and :meth:`stop`, i.e. in a process that runs tests: the main
    process of a ``--parallel`` run replays its workers' results without running them, and waits.
    """

    def __init__(self) -> None:
        self.armed: tuple[str, float] | None = None  #: what runs, and until when it may (one attribute: atomic)
        self.watching = False
        self._pid: int | None = None  # the process whose thread watches (none survives a fork)

    @staticmethod
    def timeout() -> float:
        value = os.environ.get("DJANGO_SUITE_TEST_TIMEOUT")
        if value is None:
            value = getattr(settings, "DJANGO_SUITE_TEST_TIMEOUT", DEFAULT_TEST_TIMEOUT)
        return float(value)

    def start(self) -> None:
        self.watching = self.timeout() > 0
        self.armed = None

    def stop(self) -> None:
        self.watching = False
        self.armed = None

    def arm(self, label: str) -> None:
        """Give ``label`` (a test id, or a class's set-up or tear-down) the full timeout from now."""
        if not self.watching:
            return
        if self._pid != os.getpid():
            self._pid = os.getpid()
            _original("_thread", "start_new_thread")(self._watch, ())
        self.armed = (label, monotonic() + self.timeout())

    def _watch(self) -> None:
        sleep = _original("time", "sleep")
        while True:
            sleep(1.0)
            armed = self.armed
            if self.watching and armed is not None and monotonic() > armed[1]:
                _hung(armed[0], self.timeout())


WATCHDOG = Watchdog()
#: The main process's result, for writing what it has when the watchdog ends the run.
_main_result: RecordingResult | None = None


def _hung(label: str, seconds: float) -> None:
    """Name the hung step and dump every stack into the log (stderr), then end the run."""
    err = sys.__stderr__
    err.write(f"\nHUNG in {label}: still running after {seconds:.0f} s (tests/django_suite watchdog,"
              f" pid {os.getpid()}); the stacks of all threads:\n")
    err.flush()
    faulthandler.dump_traceback(file=err, all_threads=True)
    if "gevent" in sys.modules:
        try:
            from gevent.util import format_run_info

            err.write("\nThe greenlets:\n" + "\n".join(format_run_info()) + "\n")
        except Exception as ex:  # the dump is a best effort; ending the run is not
            err.write(f"(no greenlet dump: {ex!r})\n")
    err.flush()
    try:
        _write(hung=[*_read().get("hung", []), label])
    except Exception as ex:  # the log still names it
        err.write(f"(could not record the hang in the results file: {ex!r})\n")
    main = int(os.environ.get(MAIN_PID, os.getpid()))
    if main == os.getpid():
        _end_main_process()
    try:
        os.kill(main, signal.SIGUSR1)
        _original("time", "sleep")(ANSWER_SECONDS)
        os.kill(main, signal.SIGKILL)
    except ProcessLookupError:
        pass
    os._exit(HUNG_STATUS)


def _end_main_process(*_: Any) -> None:
    """Write the outcomes recorded so far, kill the workers and exit with :data:`HUNG_STATUS`."""
    try:
        if _main_result is not None:
            _write(outcomes=dict(_main_result.outcomes), tracebacks=dict(_main_result.tracebacks))
    finally:
        for child in multiprocessing.active_children():
            child.kill()
        sys.__stderr__.flush()
        os._exit(HUNG_STATUS)


class WatchedResult:
    """A test result mixin arming the process's :data:`WATCHDOG` for each test and what follows it."""

    def startTest(self, test):
        WATCHDOG.arm(test.id())
        super().startTest(test)  # type: ignore[misc]

    def stopTest(self, test):
        super().stopTest(test)  # type: ignore[misc]
        WATCHDOG.arm(f"the step after {test.id()}")


class RecordingResult(WatchedResult, unittest.TextTestResult):
    """Django's text result (the console output is unchanged) that also keeps each outcome."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.outcomes: dict[str, str] = {}
        self.tracebacks: dict[str, str] = {}
        global _main_result
        _main_result = self

    def _record(self, test: unittest.TestCase, outcome: str, err: Any = None) -> None:
        test_id = test.id()
        if self.outcomes.get(test_id) in BAD:
            return  # a failed subtest keeps its test failed
        self.outcomes[test_id] = outcome
        if err is not None and outcome in BAD:
            self.tracebacks[test_id] = self._exc_info_to_string(err, test)

    def addSuccess(self, test):
        super().addSuccess(test)
        self._record(test, "ok")

    def addFailure(self, test, err):
        super().addFailure(test, err)
        self._record(test, "FAIL", err)

    def addError(self, test, err):
        super().addError(test, err)
        self._record(test, "ERROR", err)

    def addSkip(self, test, reason):
        super().addSkip(test, reason)
        self._record(test, "skipped")

    def addExpectedFailure(self, test, err):
        super().addExpectedFailure(test, err)
        self._record(test, "expected failure")

    def addUnexpectedSuccess(self, test):
        super().addUnexpectedSuccess(test)
        self._record(test, "unexpected success")

    def addSubTest(self, test, subtest, err):
        super().addSubTest(test, subtest, err)
        if err is not None:
            self._record(test, "FAIL" if issubclass(err[0], test.failureException) else "ERROR", err)


class WatchedSuite(unittest.TestSuite):
    """A test suite that runs under the :data:`WATCHDOG` and arms it for each class's set-up and
    tear-down (the tests arm it from their result's ``startTest``)."""

    def run(self, result, debug=False):
        if getattr(result, "_testRunEntered", False):  # a nested suite: the outer one watches
            return super().run(result, debug)
        WATCHDOG.start()
        try:
            return super().run(result, debug)
        finally:
            WATCHDOG.stop()

    def _handleClassSetUp(self, test, result):
        cls = test.__class__
        if cls is not getattr(result, "_previousTestClass", None):
            WATCHDOG.arm(f"{cls.__module__}.{cls.__qualname__}.setUpClass")
        super()._handleClassSetUp(test, result)

    def _tearDownPreviousClass(self, test, result):
        previous = getattr(result, "_previousTestClass", None)
        if previous is not None and previous is not getattr(test, "__class__", None):
            WATCHDOG.arm(f"{previous.__module__}.{previous.__qualname__}.tearDownClass")
        super()._tearDownPreviousClass(test, result)


class WatchedRemoteTestResult(WatchedResult, RemoteTestResult):
    """The result of a ``--parallel`` worker, arming the worker's watchdog for each test."""


class WatchedRemoteTestRunner(RemoteTestRunner):
    resultclass = WatchedRemoteTestResult


class WatchedParallelTestSuite(ParallelTestSuite):
    """Django's parallel suite with workers that run under their own watchdog."""

    runner_class = WatchedRemoteTestRunner


class RecordingRunner(DiscoverRunner):
    """DiscoverRunner writing the outcomes after the tests and a teardown error if there is one,
    with the watchdog in every process that runs tests."""

    test_suite = WatchedSuite
    parallel_test_suite = WatchedParallelTestSuite

    def get_resultclass(self):
        return RecordingResult

    def run_suite(self, suite, **kwargs):
        os.environ[MAIN_PID] = str(os.getpid())  # inherited by the workers, forked or spawned
        signal.signal(signal.SIGUSR1, _end_main_process)  # a worker's watchdog fired
        result = super().run_suite(suite, **kwargs)
        _write(outcomes=result.outcomes, tracebacks=result.tracebacks)
        return result

    def teardown_databases(self, old_config, **kwargs):
        try:
            super().teardown_databases(old_config, **kwargs)
        except Exception as ex:
            _write(teardown_error=f"{type(ex).__name__}: {ex}")
            raise


def _read() -> dict[str, Any]:
    path = Path(settings.DJANGO_SUITE_RESULTS)
    return json.loads(path.read_text()) if path.exists() else {}


def _write(**data: Any) -> None:
    Path(settings.DJANGO_SUITE_RESULTS).write_text(json.dumps({**_read(), **data}, indent=1))
