"""PostgreSQL only: usage records straight into Arrow, by COPY ... TO STDOUT (FORMAT csv) parsed by
pyarrow's CSV reader, a table of `batch_size` rows at a time.

Reading rows into Python tuples and turning them into Arrow column by column costs most of an export
(fifty Python objects a record, twice). Here PostgreSQL writes the rows as CSV and pyarrow parses them
in C++ into typed columns with the export's types, so no value becomes a Python object. It is the same
statement the ORM composes (the same records, the same order), with each column given as text
PostgreSQL can print and pyarrow can read exactly:
- times as whole microseconds since the epoch (bigint), then cast to UTC timestamps: no text form of a
  time zone offset to parse;
- jsonb and uuid as their text; inet by host() (without the /32 a cast would add);
- NULL as an unquoted empty field and an empty string as "" (PostgreSQL's CSV), so the reader tells
  them apart: only an unquoted empty field is null; "t"/"f" are booleans; quoted values may hold
  newlines.
"""

from collections.abc import Iterator

import pyarrow as pa
import pyarrow.csv as pa_csv
from django.db import connection
from django.db.models import BigIntegerField, Func, QuerySet, TextField
from django.db.models.functions import Cast

from llmlog.exports.columns import ExportColumn

# Columns selected in a printable form (see the module's docstring); the others print as they are.
PRINTED = frozenset({"DateTimeField", "GenericIPAddressField", "JSONField", "UUIDField"})


def copy_tables(
    records: QuerySet, *, columns: tuple[ExportColumn, ...], schema: pa.Schema, batch_size: int
) -> Iterator[pa.Table]:
    """`records` (a queryset with its filters and order) as Arrow tables in `schema` of `batch_size`
    rows (the last one fewer)."""
    printable = {f"_export_{c.name}": _printable(c) for c in columns if c.kind in PRINTED}
    selected = [f"_export_{c.name}" if c.kind in PRINTED else c.name for c in columns]
    sql, params = records.annotate(**printable).values_list(*selected).query.sql_with_params()
    names = [column.name for column in columns]
    csv_types = {c.name: pa.int64() if c.kind == "DateTimeField" else c.arrow_type for c in columns}
    connection.ensure_connection()
    statement = f"COPY ({sql}) TO STDOUT (FORMAT csv)"
    with (
        connection.wrap_database_errors,
        connection.connection.cursor() as cursor,
        cursor.copy(statement, params) as copy,
    ):
        # PostgreSQL sends each row of a COPY TO as a message of its own, which psycopg gives as one
        # block: `batch_size` blocks are `batch_size` whole rows, parsed at once in this thread.
        rows: list[bytes] = []
        for row in copy:
            rows.append(bytes(row))
            if len(rows) == batch_size:
                yield _parsed(rows, names=names, types=csv_types, schema=schema)
                rows = []
        if rows:
            yield _parsed(rows, names=names, types=csv_types, schema=schema)


def _parsed(
    rows: list[bytes], *, names: list[str], types: dict[str, pa.DataType], schema: pa.Schema
) -> pa.Table:
    """CSV rows as a table in `schema` (the export's names and types: times from microseconds)."""
    table = pa_csv.read_csv(
        pa.py_buffer(b"".join(rows)),
        read_options=pa_csv.ReadOptions(column_names=names, use_threads=False),
        parse_options=pa_csv.ParseOptions(newlines_in_values=True),
        convert_options=pa_csv.ConvertOptions(
            column_types=types,
            null_values=[""],
            strings_can_be_null=True,
            quoted_strings_can_be_null=False,
            true_values=["t"],
            false_values=["f"],
        ),
    )
    return pa.Table.from_arrays(
        [column.cast(field.type) for column, field in zip(table.columns, schema, strict=True)], schema=schema
    )


def _printable(column: ExportColumn) -> Func:
    if column.kind == "DateTimeField":
        return Func(
            column.name,
            template="(EXTRACT(EPOCH FROM %(expressions)s) * 1000000)::bigint",
            output_field=BigIntegerField(),
        )
    if column.kind == "GenericIPAddressField":
        return Func(column.name, function="host", output_field=TextField())
    return Cast(column.name, TextField())
