"""Partition llmusage_history by month of use_date (PostgreSQL only; nothing happens on SQLite).

Why: history grows without bound, and the retention purge of a whole month is then a DROP of one
partition (instant, no dead tuples, no VACUUM debt) instead of deleting millions of rows.

The existing table is rebuilt, rows and all, in this migration's transaction:
  1. drop the llmusage_all view (it depends on the table),
  2. rename the table aside and drop its indexes and keys (their names are taken over),
  3. create `llmusage_history` PARTITIONED BY RANGE (use_date) with the same columns, defaults, NOT NULL
     and CHECK constraints (LIKE ... INCLUDING ALL), one partition per month the rows need and a
     DEFAULT partition,
  4. copy the rows (INSERT ... SELECT), then add the keys and the indexes (faster than filling indexed
     partitions), drop the old table, ANALYZE, recreate the view.
The table is locked (ACCESS EXCLUSIVE) throughout: at a million rows this takes well under a minute;
on a big production table run it when the nightly backup is not running.

PostgreSQL wants every unique key of a partitioned table to contain the partition key, so the primary
key becomes (id, use_date) and the transno unique constraint becomes (transno, use_date), under the
constraint's own name so that later Django migrations naming it still work. Django's model state is
unchanged (id is the primary key, transno is unique): see the comment on LLMUsageHistory for why transno
stays unique across history. The other indexes are copied as they are (pg_get_indexdef), so the new table
has exactly the indexes the old one had, the trigram index of 0004 included.

Reversible: the reverse rebuilds a plain table the same way, with the primary key (id) and UNIQUE
(transno) back. It fails (and rolls back, losing nothing) only if two history rows share a transno,
which the application never lets happen.
"""

import re
from datetime import date

from django.db import migrations

TABLE = "llmusage_history"
ASIDE = "llmusage_history_unpartitioned"  # the table while its rows are copied
PRIMARY_KEY = "llmusage_history_pkey"
TRANSNO_UNIQUE = "llmusagehistory_transno_unique"
DEFAULT_PARTITION = "llmusage_history_default"

# The llmusage_all view of 0003, frozen here (a migration's SQL must not follow later code).
VIEW_COLUMNS = """id, transno, taskid, use_date, use_time, responsed_seconds, finish_seconds, created_at, userid, username, userorgid, token_id, token_name, token_key_hash, "group", request_ip, feature, llmid, model_name, ownerid, provider, provider_type, channel_id, is_local, is_global_provider, endpoint, is_stream, input_tokens, output_tokens, cached_tokens, cache_creation_tokens, reasoning_tokens, image_input_tokens, web_search_count, total_tokens, usages, amount, cost, currency, price, status, code, error_message, retry_times, ioinfo, accounting_status, accounted_at, metadata, payload_hash"""
CREATE_VIEW = f"""
CREATE VIEW llmusage_all AS
    SELECT {VIEW_COLUMNS}, CAST(NULL AS TIMESTAMP WITH TIME ZONE) AS backup_time, 'hot' AS source FROM llmusage
    UNION ALL
    SELECT {VIEW_COLUMNS}, backup_time, 'history' AS source FROM llmusage_history
"""


def month_partition_name(month: date) -> str:
    return f"{TABLE}_y{month:%Y}m{month:%m}"


def next_month(month: date) -> date:
    return date(month.year + month.month // 12, month.month % 12 + 1, 1)


def months_between(first: date, last: date) -> list[date]:
    """The first days of the months from `first`'s to `last`'s, both included."""
    month, end, found = first.replace(day=1), last.replace(day=1), []
    while month <= end:
        found.append(month)
        month = next_month(month)
    return found


def fetch(schema_editor, sql: str, params=()) -> list[tuple]:
    with schema_editor.connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall()


def column_list(schema_editor, table: str) -> str:
    rows = fetch(
        schema_editor,
        "SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped "
        "ORDER BY attnum",
        [table],
    )
    return ", ".join(schema_editor.quote_name(name) for (name,) in rows)


def take_indexes(schema_editor, table: str) -> list[str]:
    """Drop the keys and indexes of `table` and return the CREATE INDEX statements of the indexes that
    back no constraint (the keys are made again by hand: their columns change)."""
    definitions = fetch(
        schema_editor,
        """
        SELECT pg_get_indexdef(i.indexrelid), i.indexrelid::regclass::text FROM pg_index i
        WHERE i.indrelid = %s::regclass AND NOT EXISTS (
            SELECT 1 FROM pg_constraint c WHERE c.conrelid = i.indrelid AND c.conindid = i.indexrelid
        )
        ORDER BY 2
        """,
        [table],
    )
    for constraint in (PRIMARY_KEY, TRANSNO_UNIQUE):
        schema_editor.execute(f"ALTER TABLE {table} DROP CONSTRAINT {constraint}")
    for _definition, name in definitions:
        schema_editor.execute(f"DROP INDEX {name}")
    return [definition for definition, _name in definitions]


def put_indexes(schema_editor, definitions: list[str], table: str) -> None:
    for definition in definitions:
        # "CREATE INDEX name ON [ONLY] public.old USING ..." -> the same index on `table`
        schema_editor.execute(re.sub(r" ON (ONLY )?\S+ USING ", f" ON {table} USING ", definition, count=1))


def partition_history(apps, schema_editor) -> None:
    if schema_editor.connection.vendor != "postgresql":
        return
    execute = schema_editor.execute
    execute("DROP VIEW llmusage_all")
    execute(f"ALTER TABLE {TABLE} RENAME TO {ASIDE}")
    indexes = take_indexes(schema_editor, ASIDE)
    execute(f"CREATE TABLE {TABLE} (LIKE {ASIDE} INCLUDING ALL EXCLUDING INDEXES) PARTITION BY RANGE (use_date)")
    [(first, last)] = fetch(schema_editor, f"SELECT min(use_date), max(use_date) FROM {ASIDE}")
    for month in months_between(first, last) if first else []:
        execute(
            f"CREATE TABLE {month_partition_name(month)} PARTITION OF {TABLE} "
            f"FOR VALUES FROM ('{month.isoformat()}') TO ('{next_month(month).isoformat()}')"
        )
    execute(f"CREATE TABLE {DEFAULT_PARTITION} PARTITION OF {TABLE} DEFAULT")
    columns = column_list(schema_editor, ASIDE)
    execute(f"INSERT INTO {TABLE} ({columns}) SELECT {columns} FROM {ASIDE}")
    execute(f"ALTER TABLE {TABLE} ADD CONSTRAINT {PRIMARY_KEY} PRIMARY KEY (id, use_date)")
    execute(f"ALTER TABLE {TABLE} ADD CONSTRAINT {TRANSNO_UNIQUE} UNIQUE (transno, use_date)")
    put_indexes(schema_editor, indexes, TABLE)
    execute(f"DROP TABLE {ASIDE}")
    execute(f"ANALYZE {TABLE}")  # autovacuum never analyses a partitioned parent
    execute(CREATE_VIEW)


def unpartition_history(apps, schema_editor) -> None:
    if schema_editor.connection.vendor != "postgresql":
        return
    execute = schema_editor.execute
    execute("DROP VIEW llmusage_all")
    execute(f"ALTER TABLE {TABLE} RENAME TO {ASIDE}")
    indexes = take_indexes(schema_editor, ASIDE)
    execute(f"CREATE TABLE {TABLE} (LIKE {ASIDE} INCLUDING ALL EXCLUDING INDEXES)")
    columns = column_list(schema_editor, ASIDE)
    execute(f"INSERT INTO {TABLE} ({columns}) SELECT {columns} FROM {ASIDE}")
    execute(f"ALTER TABLE {TABLE} ADD CONSTRAINT {PRIMARY_KEY} PRIMARY KEY (id)")
    execute(f"ALTER TABLE {TABLE} ADD CONSTRAINT {TRANSNO_UNIQUE} UNIQUE (transno)")
    put_indexes(schema_editor, indexes, TABLE)
    execute(f"DROP TABLE {ASIDE}")  # and its partitions with it
    execute(f"ANALYZE {TABLE}")
    execute(CREATE_VIEW)


class Migration(migrations.Migration):

    dependencies = [
        ('llmlog', '0005_token_key_index'),
    ]

    operations = [
        migrations.RunPython(partition_history, unpartition_history),
    ]
