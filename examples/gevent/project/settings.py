"""Settings of the gevent deployment: the shared example settings, served over WSGI."""

from examples.common.settings import *  # noqa: F403

ROOT_URLCONF = "project.urls"
WSGI_APPLICATION = "project.wsgi.application"
