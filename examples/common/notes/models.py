"""The example app's data: notes, and named counters updated in transactions."""

from django.db import models


class Note(models.Model):
    """A short text note."""

    title = models.CharField(max_length=200)
    body = models.TextField(blank=True)
    created = models.DateTimeField(auto_now_add=True)


class Counter(models.Model):
    """A named integer, incremented under a row lock (see :func:`examples.common.notes.actions.increment`)."""

    name = models.CharField(max_length=100, unique=True)
    value = models.IntegerField(default=0)
