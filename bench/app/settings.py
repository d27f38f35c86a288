"""Settings of the benchmark's Django project, chosen by the environment.

``DATABASE_URL`` (conninfo of the database), ``BENCH_ENGINE`` (one of
:data:`bench.engines.ENGINES`), ``HYBRIDPOOL_MAX_SIZE`` (the pools' cap, default 20) and
``HYBRIDPOOL_APPLICATION_NAME`` (what ``pg_stat_activity`` shows for this server's connections).
No middleware, no sessions, DEBUG off: a request costs the handler, the view and the database.
"""

import os

from bench.engines import database

SECRET_KEY = "hybridpool-bench-not-a-secret"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1"]
USE_TZ = True
INSTALLED_APPS = ["bench.app.apps.BenchConfig"]
MIDDLEWARE: list[str] = []
ROOT_URLCONF = "bench.app.urls"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

DATABASES = {
    "default": database(
        os.environ.get("BENCH_ENGINE", "hybridpool"),
        os.environ["DATABASE_URL"],
        application_name=os.environ.get("HYBRIDPOOL_APPLICATION_NAME", "hybridpool-bench"),
        max_size=int(os.environ.get("HYBRIDPOOL_MAX_SIZE", "20")),
    )
}

# Failed requests' tracebacks and the pools' warnings go to stderr (the driver keeps its end), as
# in the examples.
from examples.common.settings import LOGGING  # noqa: E402,F401
