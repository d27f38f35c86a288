"""Settings of the ASGI deployment: the shared example settings, served over ASGI."""

from examples.common.settings import *  # noqa: F403

ROOT_URLCONF = "project.urls"
ASGI_APPLICATION = "project.asgi.application"
