"""gunicorn settings of the fault suite: gevent workers on 127.0.0.1:``PORT``.

``FAULTS_WORKERS`` sets the number of workers (default 1). ``FAULTS_PRELOAD=1`` loads the
application in the master before forking (``preload_app``), monkey-patching first, as gevent's
documentation asks of a preloading master, so psycopg is imported cooperative.
"""

import os

if os.environ.get("FAULTS_PRELOAD") == "1":
    from gevent import monkey

    monkey.patch_all()
    preload_app = True

worker_class = "gevent"
workers = int(os.environ.get("FAULTS_WORKERS", "1"))
worker_connections = 1000
bind = f"127.0.0.1:{os.environ['PORT']}"
timeout = 30
graceful_timeout = 10
# gunicorn 27 opens a control socket at one fixed path per user: not wanted by a test or an example
control_socket_disable = True
