"""GIS models for tests/test_postgis.py; installed (with django.contrib.gis) only when GDAL loads."""

from django.contrib.gis.db import models


class Place(models.Model):
    name = models.CharField(max_length=100)
    point = models.PointField(srid=4326)
    area = models.PolygonField(srid=4326, null=True)
    location = models.PointField(geography=True, null=True)

    class Meta:
        app_label = "gisapp"
