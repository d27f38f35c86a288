"""The WSGI application, for ``gunicorn project.wsgi`` (gevent workers: see ``gunicorn.conf.py``)."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")

application = get_wsgi_application()
