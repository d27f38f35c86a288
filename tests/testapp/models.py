from django.db import models

from hybridpool.native import NativeQuerySet


class Item(models.Model):
    name = models.CharField(max_length=100)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        app_label = "testapp"


class Author(models.Model):
    """For ``NativeQuerySet``'s tests: a related row (``select_related``)."""

    name = models.CharField(max_length=100)
    born = models.DateField(null=True)

    objects = NativeQuerySet.as_manager()

    class Meta:
        app_label = "testapp"


class Sample(models.Model):
    """For ``NativeQuerySet``'s tests: a value of each kind Django converts on the way back."""

    title = models.CharField(max_length=100)
    price = models.DecimalField(max_digits=10, decimal_places=3)
    ratio = models.FloatField(null=True)
    count = models.IntegerField(default=0)
    flag = models.BooleanField(default=False)
    at = models.DateTimeField()
    day = models.DateField(null=True)
    span = models.DurationField(null=True)
    key = models.UUIDField(null=True)
    data = models.JSONField(null=True)
    author = models.ForeignKey(Author, null=True, on_delete=models.SET_NULL, related_name="samples")

    objects = NativeQuerySet.as_manager()

    class Meta:
        app_label = "testapp"
        ordering = ["id"]
        get_latest_by = "at"
