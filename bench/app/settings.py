"""Settings of the benchmark's Django project, chosen by the environment.

``DATABASE_URL`` (conninfo of the database), ``BENCH_ENGINE`` (one of
:data:`bench.engines.ENGINES`; for those of :data:`bench.engines.NATIVE` the async views read
through ``NativeQuerySet``), ``HYBRIDPOOL_MAX_SIZE`` (the pools' cap, default 20) and
``HYBRIDPOOL_APPLICATION_NAME`` (what ``pg_stat_activity`` shows for this server's connections).
No middleware but the benchmark's counter (:mod:`bench.app.inflight`), no sessions, DEBUG off: a request
costs the handler, the view and the database.
"""

import os

from bench.engines import NATIVE, database

SECRET_KEY = "hybridpool-bench-not-a-secret"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1"]
USE_TZ = True
INSTALLED_APPS = ["bench.app.apps.BenchConfig"]
MIDDLEWARE = ["bench.app.inflight.counting"]  # counts requests in flight, without a thread hop
ROOT_URLCONF = "bench.app.urls"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

BENCH_ENGINE = os.environ.get("BENCH_ENGINE", "hybridpool")
#: The async views read through ``Item.native`` (NativeQuerySet) instead of ``Item.objects``.
BENCH_NATIVE = BENCH_ENGINE in NATIVE

DATABASES = {
    "default": database(
        BENCH_ENGINE,
        os.environ["DATABASE_URL"],
        application_name=os.environ.get("HYBRIDPOOL_APPLICATION_NAME", "hybridpool-bench"),
        max_size=int(os.environ.get("HYBRIDPOOL_MAX_SIZE", "20")),
    )
}

# Failed requests' tracebacks and the pools' warnings go to stderr (the driver keeps its end), as
# in the examples.
from examples.common.settings import LOGGING  # noqa: E402,F401
