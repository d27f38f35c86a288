"""The WSGI application, for gunicorn's gevent workers (``gunicorn.conf.py``)."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.metricsproject.settings")

application = get_wsgi_application()
