"""The WSGI application, for gunicorn (``gunicorn.conf.py``).

With ``FAULTS_PRELOAD=1`` it runs a query at import, as an application preloaded by gunicorn's
master (``preload_app``) does before the workers are forked, and keeps that server connection's
backend pid in :data:`PRELOADED_BACKEND`: the workers must never use it.
"""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.faults.project.settings")

application = get_wsgi_application()

PRELOADED_BACKEND = None
if os.environ.get("FAULTS_PRELOAD") == "1":
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        PRELOADED_BACKEND = cursor.fetchone()[0]
    connection.close()  # back to the master's pool, which keeps it open
