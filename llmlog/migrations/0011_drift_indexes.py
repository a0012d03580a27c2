"""Partial indexes for the provider cost drift report: the records with both a cost and a provider cost,
by time, on both usage tables. The report reads those only (llmlog.selectors.drift), so with few or none
of them it reads next to nothing. A plain CREATE INDEX: llmusage holds a day or so of records, and history
(partitioned: the index reaches every partition, and partitions made later get it) takes writes only
from the nightly move."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("llmlog", "0010_provider_cost"),
    ]

    operations = [
        migrations.AddIndex(
            model_name="llmusage",
            index=models.Index(
                condition=models.Q(("cost__isnull", False), ("provider_cost__isnull", False)),
                fields=["-use_time"],
                name="llmusage_drift_time_idx",
            ),
        ),
        migrations.AddIndex(
            model_name="llmusagehistory",
            index=models.Index(
                condition=models.Q(("cost__isnull", False), ("provider_cost__isnull", False)),
                fields=["-use_time"],
                name="llmusage_hist_drift_time_idx",
            ),
        ),
    ]
