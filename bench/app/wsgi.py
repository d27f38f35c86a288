"""The WSGI application, for ``gunicorn bench.app.wsgi`` (gevent and gthread workers)."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.app.settings")

application = get_wsgi_application()
