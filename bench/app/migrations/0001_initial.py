"""The ``Item`` table and its :data:`bench.app.models.ROWS` rows."""

from django.db import migrations, models

from bench.app.models import ROWS


def insert_rows(apps, schema_editor):
    """Insert the items the views read and update."""
    item = apps.get_model("app", "Item")
    item.objects.bulk_create(item(id=pk, name=f"item {pk}") for pk in range(1, ROWS + 1))


class Migration(migrations.Migration):
    initial = True
    dependencies: list = []
    operations = [
        migrations.CreateModel(
            name="Item",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("name", models.CharField(max_length=100)),
                ("hits", models.IntegerField(default=0)),
            ],
        ),
        migrations.RunPython(insert_rows, migrations.RunPython.noop),
    ]
