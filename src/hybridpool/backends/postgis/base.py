"""The Django ENGINE ``hybridpool.backends.postgis``: GeoDjango's PostGIS backend, pooled.

Django's PostGIS wrapper registers the geometry adapters in ``get_new_connection`` after calling
``super()``; placing the pooled PostgreSQL wrapper after it in the MRO makes that ``super()`` take
the connection from the pool, so every pooled connection gets the adapters at each checkout.
"""

from django.contrib.gis.db.backends.postgis import base as postgis

from ..postgresql.base import DatabaseWrapper as PooledPostgreSQLWrapper


class DatabaseWrapper(postgis.DatabaseWrapper, PooledPostgreSQLWrapper):
    """GeoDjango's PostGIS ``DatabaseWrapper`` with pooled connections."""
