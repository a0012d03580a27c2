"""`export_usage`: every record of a month (hot and history), every column, as Parquet or JSON Lines,
with a manifest beside the file.

Memory stays flat in the month's size: the records are read by one statement (so one snapshot: a
record the nightly move carries from llmusage to llmusage_history meanwhile is read once, from where
it was) in batches of `batch_size`, each written as it comes, a Parquet row group or that many lines,
then dropped. On PostgreSQL a Parquet export reads by COPY straight into Arrow
(llmlog.exports.arrow_copy); JSON Lines reads a server-side cursor; SQLite the ORM's iterator. The
file is written under a temporary name and renamed when complete, so PATH never holds half an export;
the manifest is written last.

The manifest (`PATH.manifest.json`) says what the file holds, for whoever loads it to check: rows, the
sums of amount and cost (summed from the rows written, as exact Decimals; a record not priced adds
nothing), the file's sha256 and size, the month and its bounds, the org, the format, the columns and
their types, and when it was made.
"""

import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pyarrow as pa
import pyarrow.compute as pc
from django.db import connection, transaction
from django.db.models import Func, QuerySet, TextField
from django.db.models.functions import Cast
from django.utils import timezone

from llmlog.exports.arrow_copy import copy_tables
from llmlog.exports.columns import ExportColumn, arrow_schema, arrow_table, export_columns
from llmlog.exports.period import ExportPeriod
from llmlog.exports.writers import WRITERS
from llmlog.models import UsageAll
from llmlog.queries import UsageQuery
from llmlog.replicas import PRIMARY, reading_from
from llmlog.selectors.records import usage_matching

FORMATS = tuple(WRITERS)
# Records per batch (a Parquet row group): ~50 columns of a usage record; with the request and response
# each cut to LLMLOG_IO_LIMIT (4096 characters) a batch stays within some tens of MB.
BATCH_SIZE = 10_000
MONEY_COLUMNS = ("amount", "cost")
# Columns read as text (see record_batches).
READ_AS_TEXT = frozenset({"JSONField", "UUIDField", "GenericIPAddressField"})


class ExportError(ValueError):
    """An export that cannot be made; the message says why."""


@dataclass(frozen=True)
class ExportResult:
    path: Path
    manifest_path: Path
    manifest: dict[str, Any]


def manifest_path_of(path: Path) -> Path:
    return path.with_name(path.name + ".manifest.json")


def export_usage(
    *, period: ExportPeriod, fmt: str, out: Path | str, org: str = "", batch_size: int = BATCH_SIZE
) -> ExportResult:
    """Write the records of `period` (of `org`, "" = every org) to `out` in `fmt` (parquet | jsonl),
    oldest first, and the manifest beside it."""
    if fmt not in WRITERS:
        raise ExportError(f"format: {fmt!r} is not one of: {', '.join(FORMATS)}.")
    if batch_size < 1:
        raise ExportError("batch_size: at least 1.")
    out = Path(out)
    if not out.parent.is_dir():
        raise ExportError(f"out: the folder {str(out.parent)!r} does not exist.")
    columns = export_columns(UsageAll)
    partial = out.with_name(out.name + ".partial")
    money = [index for index, column in enumerate(columns) if column.name in MONEY_COLUMNS]
    sums = dict.fromkeys(MONEY_COLUMNS, Decimal(0))
    rows = 0
    try:
        with WRITERS[fmt](partial, columns) as writer, transaction.atomic():
            for chunk in _chunks(fmt=fmt, period=period, org=org, columns=columns, batch_size=batch_size):
                writer.write(chunk)
                rows += chunk.num_rows if isinstance(chunk, pa.Table) else len(chunk)
                for index in money:
                    sums[columns[index].name] += _money_sum(chunk, index)
        os.replace(partial, out)
    finally:
        partial.unlink(missing_ok=True)
    manifest = {
        "month": period.label,
        "period_start": period.start.isoformat(),
        "period_end": period.end.isoformat(),
        "time_zone": str(period.zone),
        "org": org or None,
        "format": fmt,
        "rows": rows,
        "amount_sum": f"{sums['amount']:f}",
        "cost_sum": f"{sums['cost']:f}",
        "sha256": file_sha256(out),
        "bytes": out.stat().st_size,
        "columns": [{"name": column.name, "type": str(column.arrow_type)} for column in columns],
        "created_at": timezone.now().isoformat().replace("+00:00", "Z"),
    }
    manifest_path = manifest_path_of(out)
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
    return ExportResult(path=out, manifest_path=manifest_path, manifest=manifest)


def _chunks(
    *, fmt: str, period: ExportPeriod, org: str, columns: tuple[ExportColumn, ...], batch_size: int
) -> Iterator[pa.Table] | Iterator[list[tuple]]:
    """What the format's writer takes: Arrow tables for Parquet, batches of tuples for JSON Lines. On
    PostgreSQL a Parquet export reads by COPY straight into Arrow (llmlog.exports.arrow_copy)."""
    if fmt != "parquet":
        return record_batches(period=period, org=org, columns=columns, batch_size=batch_size)
    schema = arrow_schema(columns)
    if connection.vendor == "postgresql":
        records = _records(period=period, org=org)
        return copy_tables(records, columns=columns, schema=schema, batch_size=batch_size)
    batches = record_batches(period=period, org=org, columns=columns, batch_size=batch_size)
    return (arrow_table(batch, columns=columns, schema=schema) for batch in batches)


def _money_sum(chunk: pa.Table | list[tuple], index: int) -> Decimal:
    if isinstance(chunk, pa.Table):
        return pc.sum(chunk.column(index)).as_py() or Decimal(0)  # decimal128: exact; all null: None
    return sum((row[index] for row in chunk if row[index] is not None), Decimal(0))


def _records(*, period: ExportPeriod, org: str) -> QuerySet:
    """The records of `period` (of `org`, "" = every org), oldest first: use_time, then id. On the
    primary, whatever the reads around it use: an export is what gets billed, made from what is
    committed, not from a replica that may lag; and its COPY and server-side cursor run on Django's own
    connection, the primary's, so the queryset names the same database."""
    query = UsageQuery(org=org, start=period.start, end=period.end)
    with reading_from(PRIMARY):
        return usage_matching(query=query).order_by("use_time", "id")


def record_batches(
    *, period: ExportPeriod, org: str, columns: tuple[ExportColumn, ...], batch_size: int
) -> Iterator[list[tuple]]:
    """The records of `period`, oldest first (use_time, then id), as tuples in `columns`' order, in
    lists of at most `batch_size`; JSON columns as their JSON text, ids and addresses as text.
    PostgreSQL: call inside a transaction (the cursor lives in it)."""
    records = _records(period=period, org=org)
    if connection.vendor == "postgresql":
        # jsonb, uuid and inet read as text, made by PostgreSQL: no decoding of JSON only to encode it
        # again, no UUID or ipaddress objects only to print them (host(): the address without /32).
        as_text = {f"_text_{c.name}": _as_text(c) for c in columns if c.kind in READ_AS_TEXT}
        names = [f"_text_{c.name}" if c.kind in READ_AS_TEXT else c.name for c in columns]
        rows = records.annotate(**as_text).values_list(*names)
        yield from _server_side_batches(rows.query.sql_with_params(), batch_size)
        return
    # Elsewhere (SQLite) the ORM reads in chunks and converts: JSON back to its text, UUIDs to text.
    rows = records.values_list(*(column.name for column in columns))
    to_text = {
        index: _json_text if column.is_json else str
        for index, column in enumerate(columns)
        if column.kind in READ_AS_TEXT
    }
    batch: list[tuple] = []
    for row in rows.iterator(chunk_size=batch_size):
        row = list(row)
        for index, convert in to_text.items():
            if row[index] is not None:
                row[index] = convert(row[index])
        batch.append(tuple(row))
        if len(batch) == batch_size:
            yield batch
            batch = []
    if batch:
        yield batch


def _as_text(column: ExportColumn) -> Func:
    if column.kind == "GenericIPAddressField":
        return Func(column.name, function="host", output_field=TextField())
    return Cast(column.name, TextField())


def _json_text(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def _server_side_batches(statement: tuple[str, tuple], batch_size: int) -> Iterator[list[tuple]]:
    """The ORM's statement run on a named (server-side) cursor on Django's own connection, in binary:
    psycopg's C loaders give numeric as Decimal and timestamptz as aware times (the session's zone,
    UTC), several times faster than the ORM's text loaders and per-value converters."""
    sql, params = statement
    connection.ensure_connection()
    server_cursor = psycopg.ServerCursor(connection.connection, "llmlog_export")
    with connection.wrap_database_errors, server_cursor as cursor:
        cursor.itersize = batch_size
        cursor.execute(sql, params, binary=True)
        while batch := cursor.fetchmany(batch_size):
            yield batch


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while chunk := file.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()
