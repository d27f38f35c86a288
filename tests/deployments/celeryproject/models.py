"""The rows the tasks write and read; the test creates the tables (``managed = False``)."""

from django.db import models


class Tick(models.Model):
    """One row per task run."""

    number = models.IntegerField()
    pid = models.IntegerField()

    class Meta:
        managed = False
        db_table = "celery_tick"


class Counter(models.Model):
    """One row every task increments, in the transaction that writes its tick."""

    value = models.IntegerField(default=0)

    class Meta:
        managed = False
        db_table = "celery_counter"
