"""The WSGI application, for gunicorn (``gunicorn.conf.py``)."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.deployments.failoverproject.settings")

application = get_wsgi_application()
