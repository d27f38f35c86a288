"""The TEST_RUNNER of the generated settings: Django's DiscoverRunner, writing every outcome to JSON.

``runtests.py`` builds its runner with ``get_runner(settings)``. With ``--parallel`` Django replays
each worker's results into the main process's result object, so the main process records every
test. The file named by the ``DJANGO_SUITE_RESULTS`` setting gets ``outcomes`` (test id ->
``ok``, ``FAIL``, ``ERROR``, ``skipped``, ``expected failure``, ``unexpected success``),
``tracebacks`` (test id -> text, for the failed ones) and, if dropping the test databases failed,
``teardown_error``. (The result class replaces those of runtests.py's ``--debug-sql`` and
``--pdb``, which the suite does not use.)
"""

from __future__ import annotations

import json
import unittest
from pathlib import Path
from typing import Any

from django.conf import settings
from django.test.runner import DiscoverRunner

#: Outcomes that count as not passing.
BAD = ("FAIL", "ERROR", "unexpected success")


class RecordingResult(unittest.TextTestResult):
    """Django's text result (the console output is unchanged) that also keeps each outcome."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.outcomes: dict[str, str] = {}
        self.tracebacks: dict[str, str] = {}

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


class RecordingRunner(DiscoverRunner):
    """DiscoverRunner writing the outcomes after the tests and a teardown error if there is one."""

    def get_resultclass(self):
        return RecordingResult

    def run_suite(self, suite, **kwargs):
        result = super().run_suite(suite, **kwargs)
        _write(outcomes=result.outcomes, tracebacks=result.tracebacks)
        return result

    def teardown_databases(self, old_config, **kwargs):
        try:
            super().teardown_databases(old_config, **kwargs)
        except Exception as ex:
            _write(teardown_error=f"{type(ex).__name__}: {ex}")
            raise


def _write(**data: Any) -> None:
    path = Path(settings.DJANGO_SUITE_RESULTS)
    if path.exists():
        data = {**json.loads(path.read_text()), **data}
    path.write_text(json.dumps(data, indent=1))
