"""The benchmark's one table: :data:`ROWS` items, read by primary key and updated in transactions."""

from django.db import models

#: Rows the migration inserts; the views cycle through their keys 1..ROWS.
ROWS = 100


class Item(models.Model):
    """A row to read (``name``) and to update (``hits``)."""

    name = models.CharField(max_length=100)
    hits = models.IntegerField(default=0)
