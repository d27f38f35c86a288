"""Choosing a driver: forcing the green driver without gevent fails early and says how to fix it."""

from __future__ import annotations

import subprocess
import sys

WITHOUT_GEVENT = """
import sys
sys.modules["gevent"] = None  # as if gevent were not installed
import hybridpool
try:
    hybridpool.create_pool("host=/nonexistent", driver="gevent")
except Exception as ex:
    print(type(ex).__name__, ex)
"""


def test_forcing_the_gevent_driver_without_gevent_names_the_setting_and_the_fix():
    done = subprocess.run([sys.executable, "-c", WITHOUT_GEVENT], capture_output=True, text=True, timeout=60)
    assert done.stdout.startswith(
        "ImproperlyConfigured hybridpool setting 'driver' = 'gevent' needs gevent, which cannot be imported"), done
    assert "pip install 'hybridpool[gevent]'" in done.stdout


WITHOUT_DJANGO_DB = """
import sys
import hybridpool
pool = hybridpool.create_pool(sys.argv[1], min_size=1)
with pool.connection() as conn:
    conn.execute("SELECT 1")
pool.close()
print(sorted(name for name in sys.modules if name == "django.db" or name.startswith("django.db.")))
"""


def test_import_hybridpool_and_create_pool_load_no_django_database_layer(conninfo):
    """A pool without Django (scripts, Celery tasks using psycopg alone) loads none of Django's
    database layer; the names that need it (``connection()``, ``get_pool()``...) load it on first use."""
    done = subprocess.run([sys.executable, "-c", WITHOUT_DJANGO_DB, conninfo], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
