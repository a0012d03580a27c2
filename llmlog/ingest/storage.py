"""Storage of prepared rows: COPY for a batch on PostgreSQL (a plain INSERT below SMALL_WRITE rows),
one prepared INSERT ... ON CONFLICT DO NOTHING for the single-record hot path (run for each row of a
group commit, llmlog.ingest.group), bulk_create elsewhere, and the look-up of the (transno, userorgid)
pairs already stored, hot or history."""

import functools
from collections.abc import Callable
from typing import Any

import msgspec
from django.db import connection
from django.db.models import CharField
from psycopg.types.json import Jsonb

from llmlog.db import bound_cursor
from llmlog.models import LLMUsage, LLMUsageHistory, UsageAll

# Every column ingest writes: all but `seq`, which the database numbers (its default, migration 0008).
USAGE_FIELDS = tuple(f for f in LLMUsage._meta.concrete_fields if f.attname != "seq")
JSON_COLUMNS = frozenset(f.attname for f in USAGE_FIELDS if f.get_internal_type() == "JSONField")


def write_usage_rows(rows: list[dict[str, Any]]) -> None:
    """Insert prepared rows into llmusage: COPY on PostgreSQL, bulk_create elsewhere.

    Raises IntegrityError (and writes nothing) when a transno is already taken.
    """
    if not rows:
        return
    if connection.vendor != "postgresql":
        LLMUsage.objects.bulk_create([LLMUsage(**row) for row in rows], batch_size=500)
        if len(rows) == 1:  # a single record's answer shows seq, which SQLite's trigger sets after the insert
            rows[0]["seq"] = LLMUsage.objects.filter(pk=rows[0]["id"]).values_list("seq", flat=True).first()
        return
    table, columns, values = _row_writer()
    connection.ensure_connection()
    # The raw psycopg cursor raises psycopg's errors; wrapped, a taken transno is Django's IntegrityError,
    # which the caller's retry sorts into duplicate or conflict (otherwise a concurrent resend is a 500).
    with connection.wrap_database_errors, connection.connection.cursor() as cursor:
        if len(rows) <= SMALL_WRITE:
            placeholders = ", ".join(["%s"] * len(USAGE_FIELDS))
            sql = f"INSERT INTO {table} ({columns}) VALUES ({placeholders})"
            if len(rows) == 1:
                # executemany would set up a pipeline for one row. The answer shows seq, the database's.
                cursor.execute(f"{sql} RETURNING seq", values(rows[0]))
                (rows[0]["seq"],) = cursor.fetchone()
            else:
                cursor.executemany(sql, map(values, rows))
            return
        with cursor.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(values(row))


def insert_usage_row_if_new(row: dict[str, Any]) -> bool:
    """PostgreSQL: insert one prepared row unless its org's transno is taken, in llmusage or in history;
    True when inserted. One round trip, where look-up then insert take two."""
    _, _, values = _row_writer()
    # Prepared (llmlog.db), with its 50 values bound by the server: each connection parses it once.
    with bound_cursor(native=True) as cursor:
        cursor.execute(_insert_if_new_sql(), values(row), prepare=True)
        inserted = cursor.fetchone()
    if inserted is None:
        return False
    (row["seq"],) = inserted  # the answer shows seq, numbered by the database
    return True


def insert_usage_rows_if_new(rows: list[dict[str, Any]]) -> list[bool]:
    """PostgreSQL: `insert_usage_row_if_new` for each row in turn, in the caller's transaction; for each,
    True when inserted. One round trip for them all (psycopg pipelines executemany), the statement
    prepared as for one row. In turn, so a transno twice in the list is inserted once, as if the rows
    came one after the other; an error aborts the caller's transaction, as one multi-row INSERT would."""
    if not rows:
        return []
    _, _, values = _row_writer()
    with bound_cursor(native=True) as cursor:
        cursor.executemany(_insert_if_new_sql(), map(values, rows), returning=True)
        inserted = []
        for row in rows:
            returned = cursor.fetchone()
            if returned is not None:
                (row["seq"],) = returned  # the answer shows seq, numbered by the database
            inserted.append(returned is not None)
            cursor.nextset()
    return inserted


@functools.cache
def _insert_if_new_sql() -> str:
    # INSERT ... SELECT types its values by themselves, not by the target columns as INSERT ... VALUES
    # does: each is cast to its column's type. Text stays text: a cast to varchar(n) would cut an
    # over-long value silently, where the insert's own conversion refuses it.
    # Written for a RawCursor: value n is $n, the row's values in USAGE_FIELDS order, and the look-up in
    # history names the row's own transno and userorgid again.
    table, columns, _ = _row_writer()
    typed = ", ".join(
        f"${n}::{'text' if isinstance(field, CharField) else field.db_type(connection)}"
        for n, field in enumerate(USAGE_FIELDS, start=1)
    )
    position = {field.attname: n for n, field in enumerate(USAGE_FIELDS, start=1)}
    transno, org = f"${position['transno']}::text", f"${position['userorgid']}::text"
    history = LLMUsageHistory._meta.db_table
    return (
        f"INSERT INTO {table} ({columns}) SELECT {typed} "
        f"WHERE NOT EXISTS (SELECT 1 FROM {history} WHERE transno = {transno} AND userorgid = {org}) "
        "ON CONFLICT (transno, userorgid) DO NOTHING RETURNING seq"
    )


@functools.cache
def _row_writer() -> tuple[str, str, Callable[[dict[str, Any]], list[Any]]]:
    """(table, quoted column list, row -> values in column order with JSON wrapped) for raw writes."""
    names = [f.attname for f in USAGE_FIELDS]
    json_at = [i for i, name in enumerate(names) if name in JSON_COLUMNS]

    def values(row: dict[str, Any]) -> list[Any]:
        out = [row[name] for name in names]
        for i in json_at:
            if out[i] is not None:
                # Decoded JSON only, which msgspec writes as json.dumps would, several times faster.
                out[i] = Jsonb(out[i], dumps=msgspec.json.encode)
        return out

    columns = ", ".join(connection.ops.quote_name(f.column) for f in USAGE_FIELDS)
    return LLMUsage._meta.db_table, columns, values


# Below this many rows a plain INSERT beats COPY, whose set-up costs extra round trips.
SMALL_WRITE = 10


# The idempotency key: a transno names a call within its org (userorgid).
OrgTransno = tuple[str, str]


def known_transnos(keys: list[OrgTransno]) -> dict[OrgTransno, tuple[str, str]]:
    """(transno, userorgid) -> (id, payload_hash) for records already stored, hot or history.

    Only the pairs asked for: another org's record under the same transno is never seen, so it can
    neither block a record nor be named in a conflict answer."""
    if not keys:
        return {}
    if connection.vendor == "postgresql":
        # Two array parameters instead of a thousand pairs (planning a long IN list costs more than the
        # probe), and the two tables named directly: planning the 50-column llmusage_all view costs 3x
        # more. The join on (transno, userorgid) probes each table's unique key.
        pairs = "unnest(%(t)s::text[], %(o)s::text[]) AS k(transno, userorgid)"
        sql = (
            f"SELECT u.transno, u.userorgid, u.id, u.payload_hash FROM llmusage u JOIN {pairs} "
            "ON u.transno = k.transno AND u.userorgid = k.userorgid UNION ALL "
            f"SELECT h.transno, h.userorgid, h.id, h.payload_hash FROM llmusage_history h JOIN {pairs} "
            "ON h.transno = k.transno AND h.userorgid = k.userorgid"
        )
        with connection.cursor() as cursor:
            cursor.execute(sql, {"t": [t for t, _ in keys], "o": [o for _, o in keys]})
            rows = cursor.fetchall()
    else:
        wanted = set(keys)
        rows = [
            row
            for row in UsageAll.objects.filter(
                transno__in={t for t, _ in keys}, userorgid__in={o for _, o in keys}
            ).values_list("transno", "userorgid", "id", "payload_hash")
            if (row[0], row[1]) in wanted
        ]
    return {(transno, org): (str(pk), digest) for transno, org, pk, digest in rows}
