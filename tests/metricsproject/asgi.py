"""The ASGI application, for uvicorn: hybridpool's, behind the metrics' ASGI route, which answers
``/metrics`` (and ``/metrics/``) itself, on the event loop's side of the server."""

import os

from hybridpool.asgi import get_asgi_application
from hybridpool.metrics.views import MetricsRoute

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.metricsproject.settings")

application = MetricsRoute(get_asgi_application(), path="/metrics")
