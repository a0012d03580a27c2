"""The usage record's columns as export columns, read from the model: a field added to the record (a
migration) is exported without a change here.

Each column has its Arrow type (what Parquet stores) and its JSON form (what JSON Lines writes):
- money (Decimal(18, 5)) is decimal128(18, 5) in Parquet and a string in JSON ("0.01234"), exact;
- times are UTC timestamps (microseconds) in Parquet and ISO 8601 with Z in JSON; dates are dates;
- ids (UUID) and addresses are text; JSON columns are their JSON text in Parquet (Arrow field metadata
  `llmlog.json: true` says so) and JSON values in JSON Lines;
- counts are int64, durations float64, flags booleans.
"""

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import pyarrow as pa
from django.db import models

INTEGER_TYPES = frozenset(
    {
        "AutoField",
        "BigAutoField",
        "SmallAutoField",
        "IntegerField",
        "BigIntegerField",
        "SmallIntegerField",
        "PositiveIntegerField",
        "PositiveBigIntegerField",
        "PositiveSmallIntegerField",
    }
)


@dataclass(frozen=True)
class ExportColumn:
    """One column of the export: the record's attribute, its Arrow type, and how a value is written."""

    name: str
    kind: str  # the Django field's internal type
    arrow_type: pa.DataType

    @property
    def is_json(self) -> bool:
        return self.kind == "JSONField"

    @property
    def arrow_field(self) -> pa.Field:
        metadata = {"llmlog.json": "true"} if self.is_json else None
        return pa.field(self.name, self.arrow_type, nullable=True, metadata=metadata)

    def arrow_values(self, values: tuple[Any, ...]) -> pa.Array:
        """A batch of this column's values as Arrow, as the reader gives them (JSON, ids and addresses
        already as text)."""
        return pa.array(values, type=self.arrow_type)

    @property
    def json_value(self) -> Callable[[Any], Any]:
        """value -> its JSON form (None stays null)."""
        return _JSON_FORMS.get(self.kind, _same)


def export_columns(model: type[models.Model]) -> tuple[ExportColumn, ...]:
    """Every concrete column of `model`, in its field order."""
    return tuple(
        ExportColumn(name=field.attname, kind=field.get_internal_type(), arrow_type=arrow_type(field))
        for field in model._meta.concrete_fields
    )


def arrow_schema(columns: tuple[ExportColumn, ...]) -> pa.Schema:
    return pa.schema([column.arrow_field for column in columns])


def arrow_table(batch: list[tuple], *, columns: tuple[ExportColumn, ...], schema: pa.Schema) -> pa.Table:
    """A batch of record tuples (as record_batches reads them) as an Arrow table of `schema`."""
    values = list(zip(*batch, strict=True)) or [()] * len(columns)
    arrays = [column.arrow_values(values[index]) for index, column in enumerate(columns)]
    return pa.Table.from_arrays(arrays, schema=schema)


def arrow_type(field: models.Field) -> pa.DataType:
    kind = field.get_internal_type()
    if kind in INTEGER_TYPES:
        return pa.int64()
    if kind == "DecimalField":
        return pa.decimal128(field.max_digits, field.decimal_places)
    if kind == "FloatField":
        return pa.float64()
    if kind == "BooleanField":
        return pa.bool_()
    if kind == "DateTimeField":
        return pa.timestamp("us", tz="UTC")
    if kind == "DateField":
        return pa.date32()
    return pa.string()  # text, UUIDs, addresses, JSON (as its text)


def _same(value: Any) -> Any:
    return value


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def _money(value: Decimal | None) -> str | None:
    return None if value is None else f"{value:f}"  # never exponent notation ("1E-5")


def _utc(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _day(value: date | None) -> str | None:
    return None if value is None else value.isoformat()


def _json(value: str | None) -> Any:
    return None if value is None else json.loads(value)


_JSON_FORMS: dict[str, Callable[[Any], Any]] = {
    "DecimalField": _money,
    "DateTimeField": _utc,
    "DateField": _day,
    "UUIDField": _text,
    "GenericIPAddressField": _text,
    "JSONField": _json,
}
