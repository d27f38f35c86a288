"""gunicorn settings of the metrics tests: ``METRICS_WORKERS`` gevent workers on 127.0.0.1:``PORT``."""

import os

worker_class = "gevent"
workers = int(os.environ.get("METRICS_WORKERS", "2"))
worker_connections = 1000
bind = f"127.0.0.1:{os.environ['PORT']}"
timeout = 30
graceful_timeout = 10
# gunicorn 27 opens a control socket at one fixed path per user: not wanted by a test
control_socket_disable = True


def child_exit(server, worker):
    """prometheus_client's multiprocess mode: a worker's live gauges go with it."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)
