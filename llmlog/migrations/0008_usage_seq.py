"""`seq`: a sequential 64-bit number for every usage record, hot and history (issue 15).

new-api's and AI Proxy's clients declare a log's `id` as a number; llmlog's ids are UUIDs. `seq` is the
number those dialects answer: given by the database when a record is inserted, kept when the nightly
move copies the record to history, unique across both tables (one counter gives every number once).

- PostgreSQL: a sequence `llmusage_seq`; the column's default is `nextval('llmusage_seq')` on both
  tables; NOT NULL; UNIQUE on llmusage; a plain index on history (partitioned: its unique keys would
  have to hold use_date, and its rows come from llmusage, where seq is unique).
- SQLite: no sequences, and a default may not hold a sub-query. A counter table `llmusage_seq` with an
  AUTOINCREMENT key (which never hands a number out twice, even after deletes) and an AFTER INSERT
  trigger on each usage table that takes the next number for a row inserted without one: inside a
  trigger, last_insert_rowid() is the trigger's own insert. The column stays nullable there (an AFTER
  trigger fills it). A later migration that makes Django rebuild llmusage or llmusage_history on SQLite
  drops their triggers with the old table: it must run SQLITE_TRIGGERS again.

Existing rows are numbered in id order (uuid7: time order) across both tables, and the counter is set
past the largest number. The `llmusage_all` view is dropped first (SQLite refuses to change a table a
view reads) and recreated with `seq`, frozen here as CREATE_VIEW.

The prefix indexes on model_name (varchar_pattern_ops) serve new-api's search, where a keyword that is a
prefix of a log's content is a prefix of its model name.
"""

from importlib import import_module

from django.db import migrations, models

import llmlog.models

DROP_VIEW = "DROP VIEW llmusage_all"
PREVIOUS_VIEW = import_module("llmlog.migrations.0006_partition_history").CREATE_VIEW  # frozen there

VIEW_COLUMNS = """id, transno, taskid, use_date, use_time, responsed_seconds, finish_seconds, created_at, userid, username, userorgid, token_id, token_name, token_key_hash, "group", request_ip, feature, llmid, model_name, ownerid, provider, provider_type, channel_id, is_local, is_global_provider, endpoint, is_stream, input_tokens, output_tokens, cached_tokens, cache_creation_tokens, reasoning_tokens, image_input_tokens, web_search_count, total_tokens, usages, amount, cost, currency, price, status, code, error_message, retry_times, ioinfo, accounting_status, accounted_at, metadata, payload_hash, seq"""  # noqa: E501
CREATE_VIEW = f"""
CREATE VIEW llmusage_all AS
    SELECT {VIEW_COLUMNS}, CAST(NULL AS TIMESTAMP WITH TIME ZONE) AS backup_time, 'hot' AS source
    FROM llmusage
    UNION ALL
    SELECT {VIEW_COLUMNS}, backup_time, 'history' AS source FROM llmusage_history
"""

TABLES = ("llmusage", "llmusage_history")
SEQUENCE = "llmusage_seq"
UNIQUE_INDEX = "llmusage_seq_unique"
HISTORY_INDEX = "llmusage_hist_seq_idx"

# Every existing record's number: its rank in id order over both tables.
NUMBERED = """
    SELECT id, row_number() OVER (ORDER BY id) AS n
    FROM (SELECT id FROM llmusage UNION ALL SELECT id FROM llmusage_history) AS every_record
"""
SQLITE_TRIGGERS = [
    f"""
    CREATE TRIGGER {table}_seq_assign AFTER INSERT ON {table} FOR EACH ROW WHEN NEW.seq IS NULL
    BEGIN
        INSERT INTO {SEQUENCE} (n) VALUES (NULL);  -- (a trigger takes no DEFAULT VALUES)
        UPDATE {table} SET seq = last_insert_rowid() WHERE rowid = NEW.rowid;
        DELETE FROM {SEQUENCE};
    END
    """
    for table in TABLES
]


def add_seq(apps, schema_editor) -> None:
    execute = schema_editor.execute
    postgresql = schema_editor.connection.vendor == "postgresql"
    if postgresql:
        execute(f"CREATE SEQUENCE {SEQUENCE} AS bigint")
    else:
        execute(f"CREATE TABLE {SEQUENCE} (n integer PRIMARY KEY AUTOINCREMENT)")
    for table in TABLES:
        execute(f"ALTER TABLE {table} ADD COLUMN seq bigint NULL")
    for table in TABLES:
        execute(
            f"UPDATE {table} SET seq = numbered.n FROM ({NUMBERED}) AS numbered "
            f"WHERE {table}.id = numbered.id"
        )
    with schema_editor.connection.cursor() as cursor:
        cursor.execute(
            "SELECT max(seq) FROM (SELECT seq FROM llmusage UNION ALL SELECT seq FROM llmusage_history) s"
        )
        (last,) = cursor.fetchone()
    if postgresql:
        if last:
            execute(f"SELECT setval('{SEQUENCE}', %s)", [last])
        for table in TABLES:
            execute(
                f"ALTER TABLE {table} ALTER COLUMN seq SET DEFAULT nextval('{SEQUENCE}'), "
                "ALTER COLUMN seq SET NOT NULL"
            )
        execute(f"ALTER SEQUENCE {SEQUENCE} OWNED BY llmusage.seq")
    else:
        if last:
            # The AUTOINCREMENT counter continues after the largest number it ever handed out.
            execute(f"INSERT INTO {SEQUENCE} (n) VALUES (%s)", [last])
            execute(f"DELETE FROM {SEQUENCE}")
        for trigger in SQLITE_TRIGGERS:
            execute(trigger)
    execute(f"CREATE UNIQUE INDEX {UNIQUE_INDEX} ON llmusage (seq)")
    execute(f"CREATE INDEX {HISTORY_INDEX} ON llmusage_history (seq)")


def remove_seq(apps, schema_editor) -> None:
    execute = schema_editor.execute
    postgresql = schema_editor.connection.vendor == "postgresql"
    execute(f"DROP INDEX {UNIQUE_INDEX}")
    execute(f"DROP INDEX {HISTORY_INDEX}")
    if not postgresql:
        for table in TABLES:
            execute(f"DROP TRIGGER {table}_seq_assign")
    for table in reversed(TABLES):  # history's default names the sequence llmusage.seq owns: it goes first
        execute(f"ALTER TABLE {table} DROP COLUMN seq")
    execute(f"DROP SEQUENCE IF EXISTS {SEQUENCE}" if postgresql else f"DROP TABLE {SEQUENCE}")


def seq_field() -> models.BigIntegerField:
    return models.BigIntegerField(
        blank=True, db_default=llmlog.models.NextUsageSeq(), editable=False, null=True
    )


class Migration(migrations.Migration):
    dependencies = [
        ("llmlog", "0007_tenant_transno_owner_audit"),
    ]

    operations = [
        migrations.RunSQL(DROP_VIEW, PREVIOUS_VIEW),
        migrations.SeparateDatabaseAndState(
            database_operations=[migrations.RunPython(add_seq, remove_seq)],
            state_operations=[
                migrations.AddField(model_name="llmusage", name="seq", field=seq_field()),
                migrations.AddField(model_name="llmusagehistory", name="seq", field=seq_field()),
                migrations.AddField(model_name="usageall", name="seq", field=seq_field()),
                migrations.AddIndex(
                    model_name="llmusagehistory",
                    index=models.Index(fields=["seq"], name=HISTORY_INDEX),
                ),
                migrations.AddConstraint(
                    model_name="llmusage",
                    constraint=models.UniqueConstraint(fields=("seq",), name=UNIQUE_INDEX),
                ),
            ],
        ),
        migrations.AddIndex(
            model_name="llmusage",
            index=models.Index(
                fields=["model_name"], name="llmusage_model_prefix_idx", opclasses=["varchar_pattern_ops"]
            ),
        ),
        migrations.AddIndex(
            model_name="llmusagehistory",
            index=models.Index(
                fields=["model_name"], name="llmusage_hist_model_prefix", opclasses=["varchar_pattern_ops"]
            ),
        ),
        migrations.RunSQL(CREATE_VIEW, DROP_VIEW),
    ]
