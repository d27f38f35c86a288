"""gunicorn settings of the failover tests: one gevent worker on 127.0.0.1:``PORT``."""

import os

worker_class = "gevent"
workers = 1
worker_connections = 1000
bind = f"127.0.0.1:{os.environ['PORT']}"
timeout = 60
graceful_timeout = 10
# gunicorn 27 opens a control socket at one fixed path per user: not wanted by a test
control_socket_disable = True
