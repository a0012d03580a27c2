"""The ClickHouse tables: history (`llmusage_history`) and the hourly rollups (`llmusage_rollup`), each
with the columns of its model, derived from it (a column added there, such as provider_cost, is mirrored
without an edit here); values as ClickHouse takes and gives them; and the load of PostgreSQL's rows.

The SQL is written for both ends of ClickHouse's life: Debian's server (18.16, 2018: no DateTime64, no
LowCardinality) and today's engine (the tests run the same statements through chdb). So times are
Int64 microseconds since the epoch (exact, as PostgreSQL keeps them; DateTime has seconds only), ids are
their text form (which sorts as PostgreSQL sorts uuids), JSON is its text, money Decimal with the model's
digits (18, 5 for a record; ROLLUP_MONEY_DIGITS, 5 for a bucket).

History is a ReplacingMergeTree ordered by (userorgid, use_time, id): a record's key never changes once
in history, so the same record written twice (a rerun, a crash between the move and the mirror, a
backfill) is one row after merges, and every read says FINAL so it is one row before them too.
Partitioned by month of use_date, as PostgreSQL's history is: the retention purge drops whole months.

The rollups are a ReplacingMergeTree ordered by the bucket's key (hour, userorgid, model_name, status),
read with FINAL too, and partitioned by UTC day of `hour`: the mirror replaces a day whole by swapping
its partition (llmlog.clickhouse.rollup_mirror), which touches no other day.
"""

import functools
import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from django.db import connections
from django.db.models import BigIntegerField, F, Field, Func, Model, QuerySet, TextField
from django.db.models.functions import Cast

from llmlog.clickhouse.client import clickhouse_execute
from llmlog.models import LLMUsageHistory, UsageRollup
from llmlog.rollups import BUCKET_FIELDS

TABLE = LLMUsageHistory._meta.db_table
ROLLUP_TABLE = UsageRollup._meta.db_table
# Where a sync loads the rollup days it replaces, before swapping each day's partition in.
ROLLUP_STAGING_TABLE = f"{ROLLUP_TABLE}_load"
DAY_MICROSECONDS = 86_400_000_000
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MICROSECOND = timedelta(microseconds=1)
# PostgreSQL's timestamptz as micros() gives it (EXTRACT returns an exact numeric since PostgreSQL 14).
EPOCH_MICROSECONDS_SQL = "(EXTRACT(EPOCH FROM %(expressions)s) * 1000000)::bigint"

_TYPES = {
    "UUIDField": "String",
    "CharField": "String",
    "TextField": "String",
    "GenericIPAddressField": "String",
    "JSONField": "String",
    "DateField": "Date",
    "DateTimeField": "Int64",
    "FloatField": "Float64",
    "BooleanField": "UInt8",
    "IntegerField": "Int64",
    "BigIntegerField": "Int64",
    "PositiveIntegerField": "Int64",
    "PositiveBigIntegerField": "Int64",
    "BigAutoField": "Int64",
}
# Rows per INSERT: ClickHouse wants big blocks (each insert makes a part to merge); 50,000 rows of
# history are a few tens of MB in the driver.
LOAD_BATCH_SIZE = 50_000


def micros(moment: datetime) -> int:
    """An aware datetime as microseconds since the epoch (exact: no float on the way)."""
    return (moment - EPOCH) // MICROSECOND


def from_micros(value: int) -> datetime:
    return EPOCH + timedelta(microseconds=value)


def quote(name: str) -> str:
    return f"`{name}`"


@dataclass(frozen=True)
class Column:
    name: str
    attname: str
    kind: str  # the model field's internal type
    type: str  # ClickHouse's

    @property
    def source(self) -> str | Func:
        """What a load selects from PostgreSQL: the value as ClickHouse takes it (JSON and uuids as their
        text, times as microseconds since the epoch: EXTRACT is exact, numeric; addresses already arrive
        as text, and `inet::text` would add a netmask), so a big load converts no value in Python: loading
        times into datetimes was half of its time."""
        if self.kind in ("JSONField", "UUIDField"):
            return Cast(self.attname, output_field=TextField())
        if self.kind == "DateTimeField":
            return Func(F(self.attname), template=EPOCH_MICROSECONDS_SQL, output_field=BigIntegerField())
        return self.attname

    def from_clickhouse(self, value: Any) -> Any:
        if value is None:
            return None
        if self.kind == "JSONField":
            return json.loads(value)
        if self.kind == "DateTimeField":
            return from_micros(value)
        if self.kind == "BooleanField":
            return bool(value)
        if self.kind == "UUIDField":
            return uuid.UUID(value)
        if self.kind == "DecimalField":
            return Decimal(value)
        return value


def _clickhouse_type(field: Field) -> str:
    """ClickHouse's type for a model field: money with the field's own digits (a bucket's are wider)."""
    kind = field.get_internal_type()
    # A field of a new kind fails here, loudly, until it is mapped.
    base = f"Decimal({field.max_digits}, {field.decimal_places})" if kind == "DecimalField" else _TYPES[kind]
    return f"Nullable({base})" if field.null else base


@functools.cache
def model_columns(model: type[Model]) -> tuple[Column, ...]:
    """Every column of the model's table, in the model's order."""
    return tuple(
        Column(field.column, field.attname, field.get_internal_type(), _clickhouse_type(field))
        for field in model._meta.concrete_fields
    )


def history_columns() -> tuple[Column, ...]:
    return model_columns(LLMUsageHistory)


def rollup_columns() -> tuple[Column, ...]:
    return model_columns(UsageRollup)


def _table_ddl(
    name: str, columns: tuple[Column, ...], *, partition_by: str, order_by: tuple[str, ...]
) -> str:
    listed = ",\n    ".join(f"{quote(column.name)} {column.type}" for column in columns)
    return (
        f"CREATE TABLE IF NOT EXISTS {name} (\n    {listed}\n) ENGINE = ReplacingMergeTree()\n"
        f"PARTITION BY {partition_by}\nORDER BY ({', '.join(order_by)})"
    )


def history_table_ddl() -> str:
    return _table_ddl(
        TABLE, history_columns(), partition_by="toYYYYMM(use_date)", order_by=("userorgid", "use_time", "id")
    )


def rollup_table_ddls() -> tuple[str, str]:
    """The rollup table, and its staging twin (same columns, engine and partitions, as a partition swap
    requires)."""
    by_day = f"intDiv(hour, {DAY_MICROSECONDS})"
    table = _table_ddl(ROLLUP_TABLE, rollup_columns(), partition_by=by_day, order_by=BUCKET_FIELDS)
    return table, f"CREATE TABLE IF NOT EXISTS {ROLLUP_STAGING_TABLE} AS {ROLLUP_TABLE}"


def column_list(columns: tuple[Column, ...]) -> str:
    return ", ".join(quote(column.name) for column in columns)


def insert_records(records: QuerySet, *, table: str, columns: tuple[Column, ...]) -> int:
    """Insert `records` into the ClickHouse `table` in big blocks, column by column; returns how many.

    The rows come through a server-side cursor of psycopg's own, already as ClickHouse takes them
    (`Column.source`): Django's per-row converters were a third of a load's time."""
    selected = records.order_by().values_list(*(column.source for column in columns))
    select_sql, select_params = selected.query.sql_with_params()
    insert_sql = f"INSERT INTO {table} ({column_list(columns)}) VALUES"
    database = connections[records.db]
    database.ensure_connection()
    loaded = 0
    # A named cursor lives in the caller's transaction (the mirror's syncs and backfill hold one).
    with database.connection.cursor(name="clickhouse_load") as cursor:
        cursor.execute(select_sql, select_params)
        while block := cursor.fetchmany(LOAD_BATCH_SIZE):
            clickhouse_execute(insert_sql, list(zip(*block, strict=True)), columnar=True)
            loaded += len(block)
    return loaded
