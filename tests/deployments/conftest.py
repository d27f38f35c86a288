"""The deployment suite (``-m deployments``): real Celery workers and their Redis broker, PgBouncer in
front of a server, and a primary with its streaming standby, each started and stopped by its tests.

They run once, in the plain pytest run: under gevent's monkey-patching the whole directory is left
out (the gevent worker it tests is a process of its own), and CI deselects them on the other Pythons
(``-m "not deployments"``): which driver serves does not change what they check. Each module sets
``pytestmark = pytest.mark.deployments``.
"""

from __future__ import annotations

from hybridpool.runtime import gevent_active

collect_ignore_glob = ["test_*.py"] if gevent_active() else []

