"""`provider_cost`: what the gateway or provider reported a call cost, beside `cost` (issue 20).

A nullable column on both usage tables: on PostgreSQL an ALTER TABLE ... ADD COLUMN (on partitioned
history it reaches every partition), on SQLite an ALTER TABLE ADD COLUMN too (Django rebuilds no table
for a nullable column without a default), so the `seq` triggers of 0008 stay. The `llmusage_all` view
lists its columns: it is dropped first and recreated with `provider_cost`, frozen here as CREATE_VIEW.
"""

from importlib import import_module

from django.db import migrations, models

DROP_VIEW = "DROP VIEW llmusage_all"
PREVIOUS_VIEW = import_module("llmlog.migrations.0008_usage_seq").CREATE_VIEW  # frozen there

VIEW_COLUMNS = """id, transno, taskid, use_date, use_time, responsed_seconds, finish_seconds, created_at, userid, username, userorgid, token_id, token_name, token_key_hash, "group", request_ip, feature, llmid, model_name, ownerid, provider, provider_type, channel_id, is_local, is_global_provider, endpoint, is_stream, input_tokens, output_tokens, cached_tokens, cache_creation_tokens, reasoning_tokens, image_input_tokens, web_search_count, total_tokens, usages, amount, cost, currency, price, status, code, error_message, retry_times, ioinfo, accounting_status, accounted_at, metadata, payload_hash, seq, provider_cost"""  # noqa: E501
CREATE_VIEW = f"""
CREATE VIEW llmusage_all AS
    SELECT {VIEW_COLUMNS}, CAST(NULL AS TIMESTAMP WITH TIME ZONE) AS backup_time, 'hot' AS source
    FROM llmusage
    UNION ALL
    SELECT {VIEW_COLUMNS}, backup_time, 'history' AS source FROM llmusage_history
"""


def provider_cost_field() -> models.DecimalField:
    return models.DecimalField(
        blank=True,
        decimal_places=5,
        help_text="What the gateway or provider reported the call cost; null: not reported.",
        max_digits=18,
        null=True,
    )


class Migration(migrations.Migration):
    dependencies = [
        ("llmlog", "0009_rollup_stale_hours"),
    ]

    operations = [
        migrations.RunSQL(DROP_VIEW, PREVIOUS_VIEW),
        migrations.AddField(model_name="llmusage", name="provider_cost", field=provider_cost_field()),
        migrations.AddField(model_name="llmusagehistory", name="provider_cost", field=provider_cost_field()),
        migrations.AddField(model_name="usageall", name="provider_cost", field=provider_cost_field()),
        migrations.RunSQL(CREATE_VIEW, DROP_VIEW),
    ]
