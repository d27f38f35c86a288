"""The failover tests' Django project, served by gunicorn's gevent worker (the green driver) on a
primary and its standby (:mod:`tests.deployments.replication`): see ``settings.py``."""
