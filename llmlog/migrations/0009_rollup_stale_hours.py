"""`llmusage_rollup_stale`: the UTC hours whose rollups may not match their rows (issue 18).

A change to a record's money, tokens, status or time marks its hour in the same transaction; the
rebuild that follows clears the mark, and a rebuild that fails leaves it with its error. Stats and
totals read a marked hour from its rows, so an answer resting on the rollups is exact in between.
"""

import uuid

import django.utils.timezone
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("llmlog", "0008_usage_seq"),
    ]

    operations = [
        migrations.CreateModel(
            name="UsageRollupStale",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("hour", models.DateTimeField(help_text="Start of the UTC hour.", unique=True)),
                ("token", models.UUIDField(default=uuid.uuid4, help_text="New at each mark.")),
                ("marked_at", models.DateTimeField(default=django.utils.timezone.now)),
                (
                    "error",
                    models.TextField(
                        blank=True, default="", help_text="Why its last rebuild failed, if it did."
                    ),
                ),
            ],
            options={
                "db_table": "llmusage_rollup_stale",
            },
        ),
    ]
