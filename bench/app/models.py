"""The benchmark's one table: :data:`ROWS` items, read by primary key and updated in transactions."""

from django.db import models

from hybridpool import NativeQuerySet

#: Rows the migration inserts; the views cycle through their keys 1..ROWS.
ROWS = 100


class Item(models.Model):
    """A row to read (``name``) and to update (``hits``)."""

    name = models.CharField(max_length=100)
    hits = models.IntegerField(default=0)

    objects = models.Manager()
    #: The same rows through ``hybridpool.NativeQuerySet``: its async reads run on the event loop
    #: (on a loop hybridpool's ASGI application serves, with a hybridpool alias), else as Django's.
    native = NativeQuerySet.as_manager()
