"""gunicorn settings of the gevent deployment: one gevent worker serving up to 1000 requests at once.

The worker monkey-patches the process before loading the application, which is what makes
hybridpool serve Django from its green pool. ``PORT`` (default 8001) is the port on 127.0.0.1.
"""

import os

worker_class = "gevent"
workers = 1
worker_connections = 1000
bind = f"127.0.0.1:{os.environ.get('PORT', '8001')}"
timeout = 30
# gunicorn 27 opens a control socket at one fixed path per user: not wanted by a test or an example
control_socket_disable = True
