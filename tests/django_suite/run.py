"""Django's own test suite as hybridpool's compatibility suite.

Downloads the source distribution of the installed Django once (into ``.cache/django_suite/``,
git-ignored), installs the few test requirements the chosen modules need, and runs Django's
``tests/runtests.py`` on one PostgreSQL server (``DATABASE_URL``, else a throwaway embedded one) in
six configurations:

=============== ================================== ============================== ===============
name            ENGINE                             runner                         reference
=============== ================================== ============================== ===============
stock           django.db.backends.postgresql      runtests.py --parallel N
thread          hybridpool, ``driver: "thread"``   runtests.py --parallel N       stock
stock-gev       django.db.backends.postgresql      python -m gevent.monkey, 1
gevent          hybridpool, ``driver: "gevent"``   python -m gevent.monkey, 1     stock-gev
stock-committed django.db.backends.postgresql      runtests.py --parallel N
native          hybridpool, ``driver: "thread"``   runtests.py --parallel N       stock-committed
=============== ================================== ============================== ===============

The last two run :data:`NATIVE_MODULES` (Django's async tests and the modules whose tests call
QuerySet's bounded async reads) with ``native_hook.py``: every QuerySet's ``aget``, ``afirst``, ...
are NativeQuerySet's, and TestCase's data is committed (a native read, on a pooled connection of
its own, could not see a test transaction's); ``native`` also sets ``HYBRIDPOOL_NATIVE=force`` so
that these reads do run natively under Django's runner, and fails unless at least
:data:`NATIVE_SHARE` of them did (``hybridpool.native.stats`` of every process, summed).

The patched runs are serial: Django's parallel runner deadlocks under gevent's monkey-patching
(``multiprocessing.Pool``'s result-handler thread becomes a greenlet that blocks the whole process
in ``os.read`` on the result pipe before the task-handler greenlet has sent a task). The stock
backend is run patched too, so that what patching alone breaks (the async tests: asgiref's
``sync_to_async`` "thread" is a greenlet on the event loop's OS thread, so Django raises
``SynchronousOnlyOperation``) is not taken for a hybridpool regression; it is listed on its own.

Every process that runs tests has a watchdog (``recorder.py``): a test, or a class's set-up or
tear-down, still running after ``--test-timeout`` seconds ends the run, with ``HUNG in <test id>``
and every stack in the log; the run is then reported as "hung in <test id>". ``--timeout`` bounds
each configuration's whole run.

Prints Django's summary line per configuration, then the regressions: tests that fail or error
with hybridpool and pass with the stock backend under the same runner (:meth:`Run.regressions`).
Exits 1 if there are any (beyond :data:`EXPECTED`), or if a hybridpool run aborted, hung, timed out
or could not drop its test databases, or too few of ``native``'s reads ran natively; 2 if a stock
reference run produced no results.

Usage: ``.venv/bin/python tests/django_suite/run.py [--configs A,B] [--parallel N] [--timeout S]
[--test-timeout S] [label ...]``
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tarfile
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import django
import psycopg

from hybridpool import embedded

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
CACHE = REPO / ".cache" / "django_suite"

#: Django test modules run by default: the issue's list, then modules where a pool can differ from
#: a connection of its own (time zones, live-server threads, several aliases, DDL, caches, ASGI).
#: Not serializers: its test_crafted_xml_performance compares CPU timings and fails at random on a
#: busy 2-core machine.
MODULES = (
    "backends transactions transaction_hooks select_for_update basic queries async model_fields"
    " get_or_create update delete bulk_create aggregation expressions test_utils handlers"
    " requests_tests postgres_tests"
    " timezones servers multiple_database cache sessions_tests migrations schema introspection"
    " db_functions db_utils fixtures fixtures_regress fixtures_model_package inspectdb raw_query"
    " prefetch_related lookup"
    " constraints indexes composite_pk expressions_window check_framework asgi test_client signals"
    " dbshell"
).split()

#: Labels of the native pair (``stock-committed``, ``native``): Django's async tests, and every
#: module whose tests call QuerySet's bounded async reads (aget, afirst, alast, aearliest,
#: alatest, acount, aexists, acontains, aaggregate, ain_bulk), directly or through Django's own
#: async code (aget_object_or_404, aauthenticate, auser, the DB session store, AsyncPaginator).
#: Of auth_tests only its modules with async tests: the rest are sync, and each test of the pair
#: costs a flush (about 0.1 s), so the whole of auth_tests would triple the run. Not cache: its
#: async tests call the cache's aget, not a QuerySet's; not auth_tests.test_hashers: no reads.
NATIVE_MODULES = (
    "async sessions_tests generic_relations basic pagination auth_tests.test_auth_backends auth_tests.test_basic"
    " auth_tests.test_decorators auth_tests.test_middleware auth_tests.test_models auth_tests.test_remote_user"
).split()
#: The share of a native run's reads that must have run natively (see README.md).
NATIVE_SHARE = 0.5

#: From Django's tests/requirements/py3.txt, only what the modules above skip tests without:
#: tblib carries tracebacks out of --parallel workers, Pillow runs model_fields' ImageField tests.
REQUIREMENTS = ("tblib", "Pillow")

#: What the suite needs from the server beyond a plain PostgreSQL: the first migrations of these
#: modules create contrib extensions, and models of model_fields and inspectdb are created with
#: Django's ICU test collation.
EXTENSIONS = {
    "postgres_tests": {"bloom", "btree_gin", "btree_gist", "citext", "hstore", "pg_trgm", "unaccent", "uuid-ossp"},
    "db_functions": {"pgcrypto"},
}
COLLATION = "sv-x-icu"
TEMPLATE = "djsuite_template"

#: Test id -> why hybridpool cannot pass it. Only for something a pool truly cannot do.
_PERSISTENT = ("patches CONN_MAX_AGE = None into the live alias and needs its connection to persist across"
               " requests: persistent connections are what a pool replaces, and hybridpool refuses them"
               " (docs/design.md section 4); Django's pool refuses them too and passes only because the setting"
               " is patched after its pool exists")
EXPECTED: dict[str, str] = {
    "backends.base.test_base.ConnectionHealthChecksTests.test_health_checks_disabled": _PERSISTENT,
    "backends.base.test_base.ConnectionHealthChecksTests.test_health_checks_enabled_errors_occurred": _PERSISTENT,
    "backends.postgresql.tests.Tests.test_pooling_health_checks": (
        "asserts psycopg_pool's private pool._check: None when CONN_HEALTH_CHECKS is False, set"
        " when it is True. hybridpool's pools check what they lend in their own getconn (so that a"
        " broken connection is replaced at once, not after psycopg_pool's backoff), whatever"
        " CONN_HEALTH_CHECKS says: a connection idle for 1 s or whose socket has data pending; that"
        " check keeps a terminated connection from being lent (docs/design.md invariant 3)"),
    # Django 6.1: create_test_db(serialize=...) is deprecated, and the test checks the warning names its caller.
    "backends.base.test_creation.TestDbCreationTests.test_serialize_deprecation": (
        "asserts that the deprecation warning of create_test_db(serialize=...) names the test's own file."
        " The ENGINE's DatabaseCreation wraps create_test_db to close the alias's pools before and after it"
        " (a pool built for the database named before must not outlive the change), so the warning, raised"
        " with stacklevel=2, names the wrapper. Closing the pools around the inner _create_test_db step"
        " only, which adds no frame, leaves pools built during migrate open into the tests and hangs"
        " multiple_database under gevent"),
    # Django 6.1 (#37075); hybridpool's own test_config.py checks the precedence itself.
    "backends.postgresql.tests.Tests.test_pool_check_can_be_overridden": (
        "asserts that psycopg_pool's private pool._check is the check given in OPTIONS['pool']. With"
        " hybridpool that check does take precedence over CONN_HEALTH_CHECKS (tests/test_config.py), and"
        " runs in hybridpool's own getconn: psycopg_pool's _check stays None, so that a broken connection"
        " is replaced at once rather than after psycopg_pool's backoff"),
}

STOCK = "django.db.backends.postgresql"
HYBRIDPOOL = "hybridpool.backends.postgresql"
BAD = ("FAIL", "ERROR", "unexpected success", "hung")  #: as recorder.BAD


@dataclass(frozen=True)
class Config:
    """One way of running the suite."""

    name: str
    engine: str
    driver: str | None = None  #: hybridpool's OPTIONS["pool"]["driver"]
    gevent: bool = False  #: run under ``python -m gevent.monkey`` (serially)
    reference: str | None = None  #: the configuration whose passes this one must keep
    #: native_hook.py: every QuerySet's bounded async reads go through NativeQuerySet's, and
    #: TestCase's data is committed (no test transaction); runs NATIVE_MODULES by default
    committed: bool = False
    #: HYBRIDPOOL_NATIVE=force, and at least NATIVE_SHARE of the reads must have run natively
    native: bool = False


CONFIGS = (
    Config("stock", STOCK),
    Config("thread", HYBRIDPOOL, driver="thread", reference="stock"),
    Config("stock-gev", STOCK, gevent=True),
    Config("gevent", HYBRIDPOOL, driver="gevent", gevent=True, reference="stock-gev"),
    Config("stock-committed", STOCK, committed=True),
    Config("native", HYBRIDPOOL, driver="thread", committed=True, native=True, reference="stock-committed"),
)


@dataclass
class Run:
    """What one configuration's run of runtests.py gave."""

    config: Config
    parallel: int
    seconds: float = 0.0
    summary: list[str] = field(default_factory=list)
    outcomes: dict[str, str] = field(default_factory=dict)
    tracebacks: dict[str, str] = field(default_factory=dict)
    problem: str | None = None  #: aborted, timed out or teardown failed
    labels: list[str] = field(default_factory=list)
    #: committed configurations: reads by path (hybridpool.native.stats summed over the processes),
    #: why reads took the thread path or were retried (with example test ids), processes counted
    paths: dict[str, int] = field(default_factory=dict)
    methods: dict[str, int] = field(default_factory=dict)
    reasons: dict[str, int] = field(default_factory=dict)
    examples: dict[str, list[str]] = field(default_factory=dict)
    processes: int = 0

    def failed(self) -> set[str]:
        return {test for test, outcome in self.outcomes.items() if outcome in BAD}

    def passed(self) -> set[str]:
        return {test for test, outcome in self.outcomes.items() if outcome not in (*BAD, "skipped")}

    def regressions(self, reference: Run) -> set[str]:
        """Tests failing here that pass in ``reference`` or are not in it (a class's set-up error
        has an id of its own), and tests passing in ``reference`` that did not run here."""
        failed = {test for test in self.failed() if test in reference.passed() or test not in reference.outcomes}
        return failed | (reference.passed() - self.outcomes.keys())


def django_tests() -> Path:
    """Return Django's ``tests/`` directory for the installed version, downloading it once."""
    version = django.__version__
    source = CACHE / f"django-{version}"
    if not source.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        sdist = CACHE / f"django-{version}.tar.gz"
        if not sdist.exists():
            subprocess.run([sys.executable, "-m", "pip", "download", f"django=={version}", "--no-binary", ":all:",
                            "--no-deps", "--quiet", "-d", str(CACHE)], check=True)
        partial = CACHE / f"django-{version}.partial"
        with tarfile.open(sdist) as archive:
            archive.extractall(partial, filter="data")
        (partial / f"django-{version}").rename(source)
        partial.rmdir()
    return source / "tests"


def install_requirements(tests: Path) -> None:
    """Install :data:`REQUIREMENTS` with the version bounds of Django's py3.txt."""
    wanted = {name.lower() for name in REQUIREMENTS}
    lines = [line.strip() for line in (tests / "requirements" / "py3.txt").read_text().splitlines()]
    specs = [line for line in lines if re.split(r"[\s<>=!~;\[]", line, maxsplit=1)[0].lower() in wanted]
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", *specs], check=True)


def prepare_server(url: str, labels: list[str]) -> tuple[list[str], str | None]:
    """Return ``labels`` minus what the server cannot run, and the template for the test databases.

    A server without the contrib extensions (the embedded one ships none) cannot run
    postgres_tests and db_functions. One without ICU (the embedded one) gets a template database
    holding a stand-in for Django's ICU test collation, a copy of "C", so that the models using it
    can be created; the few tests of that collation's behaviour then fail in every configuration
    alike and are no regression. Otherwise the template is None (the server's default).
    """
    with psycopg.connect(url, autocommit=True) as conn:
        available = {row[0] for row in conn.execute("SELECT name FROM pg_available_extensions")}
        icu = conn.execute("SELECT 1 FROM pg_collation WHERE collname = %s", [COLLATION]).fetchone()
    for module, needed in EXTENSIONS.items():
        if missing := needed - available:
            print(f"note: the server lacks the extensions {', '.join(sorted(missing))}: not running {module}")
            labels = [label for label in labels if label.split(".")[0] != module]
    if icu:
        return labels, None
    print(f"note: the server has no collation {COLLATION!r} (no ICU): the test databases get a copy"
          f' of "C" under that name')
    with psycopg.connect(embedded.create_database(url, TEMPLATE), autocommit=True) as conn:
        conn.execute(f'CREATE COLLATION "{COLLATION}" FROM "C"')
    return labels, TEMPLATE


def test_database(config: Config, alias: str) -> str:
    return f"djsuite_{config.name.replace('-', '_')}_{alias}"


def write_settings(config: Config, url: str, template: str | None, results: Path, test_timeout: float,
                   native_stats: Path | None = None) -> str:
    """Write the settings module of ``config``; return its name."""
    databases = {}
    for alias in ("default", "other"):
        entry = embedded.django_settings(url, ENGINE=config.engine,
                                         TEST={"NAME": test_database(config, alias), "TEMPLATE": template})
        if config.driver:
            entry["OPTIONS"]["pool"] = {"driver": config.driver}
        databases[alias] = entry
    module = f"settings_{config.name.replace('-', '_')}"
    (CACHE / "settings").mkdir(parents=True, exist_ok=True)
    (CACHE / "settings" / f"{module}.py").write_text(
        f'"""Generated by tests/django_suite/run.py for the {config.name!r} configuration."""\n\n'
        f"DATABASES = {databases!r}\n"
        'SECRET_KEY = "django_tests_secret_key"\n'
        'PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]\n'
        'DEFAULT_AUTO_FIELD = "django.db.models.AutoField"\n'
        "USE_TZ = False\n"
        'TEST_RUNNER = "recorder.RecordingRunner"\n'
        f"DJANGO_SUITE_RESULTS = {str(results)!r}\n"
        f"DJANGO_SUITE_TEST_TIMEOUT = {test_timeout!r}  # recorder.py's watchdog (0: off)\n"
        + ("" if native_stats is None else
           "\n# Every QuerySet reads through NativeQuerySet; TestCase's data is committed (native_hook.py).\n"
           "import native_hook  # noqa: E402\n\n"
           f"native_hook.install({str(native_stats)!r})\n")
    )
    return module


def run(config: Config, tests: Path, url: str, template: str | None, parallel: int, labels: list[str],
        timeout: float, test_timeout: float) -> Run:
    """Run runtests.py in ``config``; its output goes to ``.cache/django_suite/logs/<name>.log``."""
    result = Run(config, 1 if config.gevent else parallel, labels=labels)
    results = CACHE / "results" / f"{config.name}.json"
    log = CACHE / "logs" / f"{config.name}.log"
    native_stats = CACHE / "results" / f"{config.name}.native.jsonl" if config.committed else None
    for path in (results, log, native_stats):
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.unlink(missing_ok=True)
    module = write_settings(config, url, template, results, test_timeout, native_stats)
    command = [sys.executable, *(["-m", "gevent.monkey"] if config.gevent else []), "runtests.py",
               f"--settings={module}", "--noinput", "--verbosity=2", f"--parallel={result.parallel}", *labels]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(CACHE / "settings"), str(HERE),
                                                                     os.environ.get("PYTHONPATH")]))}
    env.pop("HYBRIDPOOL_NATIVE", None)
    if config.native:
        env["HYBRIDPOOL_NATIVE"] = "force"
    print(f"== {config.name} ({config.engine}{', driver ' + config.driver if config.driver else ''}):"
          f" {' '.join(command[1:len(command) - len(labels)])} <{len(labels)} labels>", flush=True)
    started = time.monotonic()
    with log.open("w") as output:
        process = subprocess.Popen(command, cwd=tests, env=env, stdout=output, stderr=subprocess.STDOUT,
                                   start_new_session=True)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            result.problem = f"timed out after {timeout:.0f} s"
    try:  # what outlived it, e.g. the workers of a main process killed by a worker's watchdog
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    result.seconds = time.monotonic() - started
    drop_test_databases(config, url, result.parallel)
    text = log.read_text(errors="replace").splitlines()
    for i, line in enumerate(text):
        if re.match(r"Ran \d+ tests? in ", line):
            result.summary = [line, *[next_line for next_line in text[i + 1:i + 3] if next_line.strip()][:1]]
    data = json.loads(results.read_text()) if results.exists() else {}
    result.outcomes, result.tracebacks = data.get("outcomes", {}), data.get("tracebacks", {})
    if "teardown_error" in data:
        result.problem = f"dropping the test databases failed: {first_line(data['teardown_error'])}"
    # recorder.py's watchdog: the results file names what hung, and so does the log (in case the
    # file could not be written).
    hung = dict.fromkeys([*data.get("hung", []), *(m.group(1) for line in text
                                                    if (m := re.match(r"HUNG in (.+?): still running", line)))])
    for label in hung:
        result.outcomes[label] = "hung"
        result.tracebacks[label] = (f"hung: still running after {test_timeout:.0f} s; the stacks are in"
                                    f" .cache/django_suite/logs/{config.name}.log")
    if hung:
        result.problem = f"hung in {', '.join(hung)} (no progress for {test_timeout:.0f} s; stacks in the log)"
    if not result.outcomes and result.problem is None:
        reasons = [line for line in text if line.startswith("Got an error")]
        reasons = reasons or [line for line in text if line.strip()][-1:]
        result.problem = f"aborted before the tests ran (exit {process.returncode}): {' | '.join(reasons)}"
    if native_stats is not None:
        read_native_stats(result, native_stats)
    return result


def read_native_stats(result: Run, path: Path) -> None:
    """Sum the per-process lines native_hook.py appended to ``path`` into ``result``; for the
    ``native`` configuration, a problem unless at least :data:`NATIVE_SHARE` of the reads (and at
    least one) ran natively."""
    paths: dict[str, int] = defaultdict(int)
    methods: dict[str, int] = defaultdict(int)
    reasons: dict[str, int] = defaultdict(int)
    examples: dict[str, list[str]] = defaultdict(list)
    lines = path.read_text().splitlines() if path.exists() else []
    for line in lines:
        data = json.loads(line)
        for key, count in data["stats"].items():
            paths[key] += count
        for key, count in data["methods"].items():
            methods[key] += count
        for key, count in data["reasons"].items():
            reasons[key] += count
        for key, tests in data["examples"].items():
            examples[key].extend(test for test in tests if test not in examples[key])
    result.paths, result.methods, result.reasons = dict(paths), dict(methods), dict(reasons)
    result.examples, result.processes = dict(examples), len(lines)
    if not result.config.native or result.problem:
        return
    native, total = paths["native"], paths["native"] + paths["thread"] + paths["retried"]
    if not lines:
        result.problem = "no process wrote its hybridpool.native.stats"
    elif native == 0 or native < NATIVE_SHARE * total:
        result.problem = (f"only {native} of {total} reads ran natively (at least {NATIVE_SHARE:.0%} and one"
                          f" are required)")


def native_line(run: Run) -> str:
    paths = run.paths
    by_method = ", ".join(f"{name} {count}" for name, count in sorted(run.methods.items(), key=lambda item: -item[1]))
    return (f"native reads: {paths.get('native', 0)} native, {paths.get('thread', 0)} thread,"
            f" {paths.get('retried', 0)} retried ({run.processes} processes; by method: {by_method or 'none'})")


def drop_test_databases(config: Config, url: str, parallel: int) -> None:
    """Drop what a failed teardown left behind, so that the next configuration starts clean."""
    for alias in ("default", "other"):
        name = test_database(config, alias)
        for database in [name, *(f"{name}_{worker}" for worker in range(1, parallel + 1))]:
            embedded.drop_database(url, database)


def first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else ""


def essence(traceback: str) -> str:
    """The exception line of a traceback (the first line after the last frame)."""
    lines = traceback.rstrip().splitlines()
    frames = [i for i, line in enumerate(lines) if line.startswith("  File ")]
    rest = lines[frames[-1] + 1:] if frames else lines
    return next((line for line in rest if line and not line.startswith(" ")), lines[-1] if lines else "")


def print_grouped(title: str, tests: set[str], run: Run, limit: int | None = None) -> None:
    """Print ``tests`` grouped by the exception that ended them in ``run``, at most ``limit`` per group."""
    print(f"\n{title}: {len(tests)}")
    groups: dict[str, list[str]] = defaultdict(list)
    for test in sorted(tests):
        message = essence(run.tracebacks.get(test, "")) if test in run.outcomes else "did not run"
        groups[message[:300]].append(test)
    for message, members in sorted(groups.items(), key=lambda item: -len(item[1])):
        print(f"  [{len(members)}] {message}")
        for test in members[:limit]:
            print(f"      {test}" + (f"  (expected: {EXPECTED[test]})" if test in EXPECTED else ""))
        if limit is not None and len(members) > limit:
            print(f"      ... and {len(members) - limit} more (see .cache/django_suite/logs/{run.config.name}.log)")


def report(runs: dict[str, Run]) -> int:
    """Print summaries, what gevent breaks by itself, and the regressions; return the exit status."""
    status = 0
    print("\n== summary")
    for run in runs.values():
        summary = " / ".join(run.summary) or "no summary line"
        print(f"{run.config.name:>15}  {run.seconds:6.0f} s  --parallel={run.parallel}  {summary}"
              + (f"\n{'':>17}{native_line(run)}" if run.config.committed else "")
              + (f"\n{'':>17}PROBLEM: {run.problem}" if run.problem else ""))
        if run.problem and run.config.engine == HYBRIDPOOL:
            status = 1
    for run in runs.values():
        if run.config.committed and run.reasons:
            print(f"\nReads of {run.config.name} that took the thread path, or were retried there, by reason:")
            for reason, count in sorted(run.reasons.items(), key=lambda item: -item[1]):
                print(f"  [{count}] {reason}\n      e.g. {', '.join(run.examples.get(reason, [])[:3])}")
    stock, patched = runs.get("stock"), runs.get("stock-gev")
    if stock and patched and stock.outcomes and patched.outcomes:
        print_grouped("Broken by gevent's monkey-patching alone (fail on stock-gev, pass on stock)",
                      patched.failed() & stock.passed(), patched, limit=5)
    for run in runs.values():
        if run.config.reference is None or run.config.reference not in runs:
            continue
        reference = runs[run.config.reference]
        if not reference.outcomes:
            print(f"\n{run.config.name}: no results from its reference {reference.config.name}")
            return 2
        if not run.outcomes:
            print(f"\nRegressions of {run.config.name}: unknown, the run gave no results")
            continue
        regressions = run.regressions(reference)
        print_grouped(f"Regressions of {run.config.name} (fail here, pass on {reference.config.name})",
                      regressions, run)
        if regressions - EXPECTED.keys():
            status = 1
    ran = set().union(*(run.outcomes.keys() for run in runs.values()))
    stale = (EXPECTED.keys() & ran) - set().union(*(run.failed() for run in runs.values()))
    if stale:
        print(f"\nExpected failures that no longer fail (remove them from EXPECTED): {sorted(stale)}")
    return status


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("labels", nargs="*",
                        help="Django test labels (default: MODULES, and NATIVE_MODULES for the committed configurations)")
    parser.add_argument("--configs", default=",".join(config.name for config in CONFIGS),
                        help="comma-separated configurations to run (a configuration's reference is added)")
    parser.add_argument("--parallel", type=int, default=2, help="runtests.py --parallel for unpatched runs")
    parser.add_argument("--timeout", type=float, default=360, help="seconds allowed per configuration")
    parser.add_argument("--test-timeout", type=float, default=120,
                        help="seconds a test, or a class's set-up or tear-down, may run before the watchdog"
                             " ends the run as hung (0: no watchdog)")
    args = parser.parse_args()
    by_name = {config.name: config for config in CONFIGS}
    wanted = {name.strip() for name in args.configs.split(",") if name.strip()}
    if unknown := wanted - by_name.keys():
        parser.error(f"unknown configurations: {', '.join(sorted(unknown))} (known: {', '.join(by_name)})")
    wanted |= {by_name[name].reference for name in wanted if by_name[name].reference}
    configs = [config for config in CONFIGS if config.name in wanted]
    tests = django_tests()
    install_requirements(tests)
    with embedded.server_url() as url:
        default = (args.labels or list(MODULES)) if any(not config.committed for config in configs) else []
        committed = (args.labels or list(NATIVE_MODULES)) if any(config.committed for config in configs) else []
        runnable, template = prepare_server(url, list(dict.fromkeys([*default, *committed])))
        labels = [label for label in default if label in runnable]
        native_labels = [label for label in committed if label in runnable]
        try:
            runs = {config.name: run(config, tests, url, template, args.parallel,
                                     native_labels if config.committed else labels, args.timeout, args.test_timeout)
                    for config in configs}
        finally:
            embedded.drop_database(url, TEMPLATE)
    return report(runs)


if __name__ == "__main__":
    sys.exit(main())
