from django.db import models


class Write(models.Model):
    """One row per ``/write/`` request; the table is created by the test (``TABLE_SQL``)."""

    worker = models.IntegerField()
    at = models.DateTimeField(auto_now_add=True)

    class Meta:
        app_label = "failoverproject"
        db_table = "failover_write"
        managed = False


TABLE_SQL = "CREATE TABLE failover_write (id bigserial PRIMARY KEY, worker integer NOT NULL, at timestamptz NOT NULL)"
