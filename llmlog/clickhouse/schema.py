"""The ClickHouse table of history: the columns of `llmusage_history`, derived from the model (a column
added there, such as provider_cost, is mirrored without an edit here), and values as ClickHouse takes
and gives them.

The SQL is written for both ends of ClickHouse's life: Debian's server (18.16, 2018: no DateTime64, no
LowCardinality) and today's engine (the tests run the same statements through chdb). So times are
Int64 microseconds since the epoch (exact, as PostgreSQL keeps them; DateTime has seconds only), ids are
their text form (which sorts as PostgreSQL sorts uuids), JSON is its text, money Decimal(18, 5).

ReplacingMergeTree ordered by (userorgid, use_time, id): a record's key never changes once in history,
so the same record written twice (a rerun, a crash between the move and the mirror, a backfill) is one
row after merges, and every read says FINAL so it is one row before them too. Partitioned by month of
use_date, as PostgreSQL's history is: the retention purge drops whole months.
"""

import functools
import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from django.db.models import BigIntegerField, F, Func, TextField
from django.db.models.functions import Cast

from core.money import MONEY_DIGITS, MONEY_PLACES
from llmlog.models import LLMUsageHistory

TABLE = "llmusage_history"
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
    "DecimalField": f"Decimal({MONEY_DIGITS}, {MONEY_PLACES})",
}


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


@functools.cache
def history_columns() -> tuple[Column, ...]:
    """Every column of llmusage_history, in the model's order."""
    columns = []
    for field in LLMUsageHistory._meta.concrete_fields:
        kind = field.get_internal_type()
        base = _TYPES[kind]  # a field of a new kind fails here, loudly, until it is mapped
        columns.append(Column(field.column, field.attname, kind, f"Nullable({base})" if field.null else base))
    return tuple(columns)


def history_table_ddl() -> str:
    columns = ",\n    ".join(f"{quote(column.name)} {column.type}" for column in history_columns())
    return (
        f"CREATE TABLE IF NOT EXISTS {TABLE} (\n    {columns}\n) ENGINE = ReplacingMergeTree()\n"
        "PARTITION BY toYYYYMM(use_date)\nORDER BY (userorgid, use_time, id)"
    )


def column_list() -> str:
    return ", ".join(quote(column.name) for column in history_columns())
