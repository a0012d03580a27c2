"""Idempotency per tenant, the model's owner in the price book, and the audit trail of edits.

- `transno` is unique per org: (transno, userorgid) on both usage tables, transno first so that a look-up
  by transno alone (the failures page, keyword search) still uses the index. On PostgreSQL history is
  partitioned (0006), whose unique keys must hold the partition key: there the key is (transno,
  userorgid, use_date) under the constraint's name, and Django's state says (transno, userorgid).
- `ModelPrice.ownerid`: the org that owns the model; pricing gives a record its owner from here.
- Rollup amount and cost are ten digits wider than a record's: a bucket's sum cannot overflow.
- `UsageAudit` (`llmusage_audit`): who changed or deleted a usage record, when, before and after.
"""

from importlib import import_module

import django.utils.timezone
from django.db import migrations, models

# SQLite rebuilds a table to change its constraints and refuses while a view reads it: the view goes
# for the length of this migration, on both databases (one path), and comes back unchanged.
DROP_VIEW = "DROP VIEW llmusage_all"
CREATE_VIEW = import_module("llmlog.migrations.0006_partition_history").CREATE_VIEW  # frozen there

HISTORY = "llmusage_history"
OLD_HISTORY_KEY = "llmusagehistory_transno_unique"
NEW_HISTORY_KEY = "llmusagehistory_org_transno_unique"
NEW_HISTORY_CONSTRAINT = models.UniqueConstraint(fields=("transno", "userorgid"), name=NEW_HISTORY_KEY)
OLD_HISTORY_CONSTRAINT = models.UniqueConstraint(fields=("transno",), name=OLD_HISTORY_KEY)


def _swap_history_key(apps, schema_editor, *, drop, add, add_columns) -> None:
    model = apps.get_model("llmlog", "LLMUsageHistory")
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(f"ALTER TABLE {HISTORY} DROP CONSTRAINT {drop.name}")
        schema_editor.execute(
            f"ALTER TABLE {HISTORY} ADD CONSTRAINT {add.name} UNIQUE ({add_columns}, use_date)"
        )
    else:
        schema_editor.remove_constraint(model, drop)
        schema_editor.add_constraint(model, add)


def history_key_per_org(apps, schema_editor) -> None:
    _swap_history_key(
        apps,
        schema_editor,
        drop=OLD_HISTORY_CONSTRAINT,
        add=NEW_HISTORY_CONSTRAINT,
        add_columns="transno, userorgid",
    )


def history_key_global(apps, schema_editor) -> None:
    _swap_history_key(
        apps, schema_editor, drop=NEW_HISTORY_CONSTRAINT, add=OLD_HISTORY_CONSTRAINT, add_columns="transno"
    )


class Migration(migrations.Migration):
    dependencies = [
        ("llmlog", "0006_partition_history"),
    ]

    operations = [
        migrations.RunSQL(DROP_VIEW, CREATE_VIEW),
        migrations.CreateModel(
            name="UsageAudit",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("usage_id", models.UUIDField()),
                ("transno", models.CharField(max_length=128)),
                ("userorgid", models.CharField(blank=True, default="", max_length=64)),
                (
                    "action",
                    models.CharField(choices=[("update", "Update"), ("delete", "Delete")], max_length=8),
                ),
                (
                    "actor",
                    models.CharField(help_text="The key or user that made the change.", max_length=150),
                ),
                ("at", models.DateTimeField(default=django.utils.timezone.now)),
                (
                    "before",
                    models.JSONField(help_text="The changed fields before (a delete: the whole record)."),
                ),
                (
                    "after",
                    models.JSONField(
                        blank=True, help_text="The changed fields after; empty for a delete.", null=True
                    ),
                ),
            ],
            options={
                "db_table": "llmusage_audit",
                "ordering": ["-at"],
                "indexes": [
                    models.Index(fields=["usage_id", "-at"], name="llmusage_audit_usage_idx"),
                    models.Index(fields=["-at"], name="llmusage_audit_at_idx"),
                ],
            },
        ),
        migrations.AddField(
            model_name="modelprice",
            name="ownerid",
            field=models.CharField(
                blank=True,
                default="",
                help_text="The org that owns the model and receives its cost; records priced here take it.",
                max_length=64,
            ),
        ),
        migrations.AlterField(
            model_name="llmusage",
            name="transno",
            field=models.CharField(
                help_text="The gateway's request id; with userorgid, the idempotency key.", max_length=128
            ),
        ),
        migrations.AlterField(
            model_name="llmusagehistory",
            name="transno",
            field=models.CharField(
                help_text="The gateway's request id; with userorgid, the idempotency key.", max_length=128
            ),
        ),
        migrations.AlterField(
            model_name="usagerollup",
            name="amount",
            field=models.DecimalField(decimal_places=5, default=0, max_digits=28),
        ),
        migrations.AlterField(
            model_name="usagerollup",
            name="cost",
            field=models.DecimalField(decimal_places=5, default=0, max_digits=28),
        ),
        # The hot table: add the per-org key before dropping the global one (never a moment without one).
        migrations.AddConstraint(
            model_name="llmusage",
            constraint=models.UniqueConstraint(
                fields=("transno", "userorgid"), name="llmusage_org_transno_unique"
            ),
        ),
        migrations.RemoveConstraint(model_name="llmusage", name="llmusage_transno_unique"),
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.RemoveConstraint(model_name="llmusagehistory", name=OLD_HISTORY_KEY),
                migrations.AddConstraint(model_name="llmusagehistory", constraint=NEW_HISTORY_CONSTRAINT),
            ],
            database_operations=[migrations.RunPython(history_key_per_org, history_key_global)],
        ),
        migrations.RunSQL(CREATE_VIEW, DROP_VIEW),
    ]
