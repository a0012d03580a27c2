"""The data the benchmarks run on and the raw side of their ceilings: llmusage filled with demo records,
the keys and connections of an ingest or a read benchmark, and the raw INSERT of the ingest ceilings.
"""

import json
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from benchmarks.report import Report
from benchmarks.startup import setup_django

if TYPE_CHECKING:
    from datetime import datetime
    from typing import Self

    import psycopg


def fill_usage(*, rows: int, leftovers: tuple[str, ...] = (), vacuum: bool = True) -> bool:
    """At least `rows` records in llmusage (demo data), without the records earlier runs left behind
    (transno prefixes in `leftovers`), analyzed as autovacuum would have. Returns whether the table
    changed; an unchanged table is not vacuumed again, nor is any with vacuum=False (the caller changes
    it further and vacuums once)."""
    from django.db import connection

    from llmlog.demo import load_demo_data
    from llmlog.models import LLMUsage

    deleted = 0
    with connection.cursor() as cursor:  # before counting: leftovers are not part of the `rows`
        for prefix in leftovers:
            cursor.execute("DELETE FROM llmusage WHERE transno LIKE %s", [prefix + "%"])
            deleted += cursor.rowcount
    existing = LLMUsage.objects.count()
    if existing < rows:
        print(f"loading {rows - existing:,} demo rows ...", flush=True)
        load_demo_data(rows=rows - existing)
    changed = bool(deleted) or existing < rows
    if changed and vacuum:
        with connection.cursor() as cursor:
            cursor.execute("VACUUM ANALYZE llmusage")
    return changed


def ingest_setup(
    *, rows: int, leftovers: tuple[str, ...], key_name: str, scopes: list[str]
) -> tuple[str, "psycopg.Connection"]:
    """The set-up of a benchmark that ingests over HTTP: Django on the benchmark database, llmusage
    filled to `rows` without the records of earlier runs (`fill_usage`), a platform key (the records
    state their money, which only a platform key may) for the app's requests, and a raw connection for
    the ceilings (close it, or use it as a context manager). Returns (key, raw connection)."""
    setup_django()
    from llmlog.keys import api_key_create

    fill_usage(rows=rows, leftovers=leftovers)
    _, key = api_key_create(name=key_name, role="admin", scopes=scopes)
    return key, raw_connection()


def raw_connection():
    """A plain psycopg connection to the benchmark database, for the raw-SQL ceilings."""
    import psycopg
    from django.conf import settings

    db = settings.DATABASES["default"]
    return psycopg.connect(
        host=db["HOST"], port=db["PORT"] or 5432, user=db["USER"], password=db["PASSWORD"], dbname=db["NAME"]
    )


def ceiling_connection(*, prepared: bool = False) -> "psycopg.Connection":
    """An autocommit psycopg connection for the ceiling of a read: unprepared, planned at every run, as
    Django sends its queries (psycopg would prepare a statement after 5 runs), or with prepared=True
    prepared from the first run, as llmlog prepares its hottest statements (llmlog.db)."""
    import psycopg

    return psycopg.connect(
        os.environ["DATABASE_URL"], autocommit=True, prepare_threshold=0 if prepared else None
    )


@dataclass
class OrgReads:
    """What a read benchmark on bench_query's data set reads with: an unprepared connection for the
    ceilings, the biggest org (hot and history: a read's worst case for an org) with a reader key of it
    and a platform key, both read-only, the run's `now`, and the report. A benchmark extends it with
    its own clients (fields with init=False, set in __post_init__)."""

    raw: "psycopg.Connection"
    org: str
    org_rows: int
    org_key: str
    platform_key: str
    now: "datetime"
    report: Report

    @classmethod
    def open(cls, repeat: int) -> "Self":
        from django.utils import timezone

        from llmlog.keys import api_key_create

        raw = ceiling_connection()
        org, org_rows = raw.execute(
            "SELECT userorgid, count(*) FROM llmusage_all GROUP BY 1 ORDER BY 2 DESC LIMIT 1"
        ).fetchone()
        _, org_key = api_key_create(userorgid=org, role="reader", scopes=["read"], name="bench")
        _, platform_key = api_key_create(userorgid="", role="admin", scopes=["read"], name="bench")
        return cls(raw, org, org_rows, org_key, platform_key, timezone.now(), Report(repeat))


# --- the raw INSERT of the ingest ceilings ---------------------------------------------------------


def usage_columns_sql() -> str:
    """Every column ingest writes to llmusage, quoted, in its order: a ceiling writes them all."""
    from llmlog.ingest.storage import USAGE_FIELDS

    return ", ".join(f'"{f.column}"' for f in USAGE_FIELDS)


def usage_insert_sql() -> str:
    """One llmusage row of every column, a record already there skipped, as ingest skips it."""
    from llmlog.ingest.storage import USAGE_FIELDS

    placeholders = ", ".join(["%s"] * len(USAGE_FIELDS))
    return (
        f"INSERT INTO llmusage ({usage_columns_sql()}) VALUES ({placeholders}) "
        "ON CONFLICT (transno, userorgid) DO NOTHING"
    )


def usage_values(row: dict) -> tuple:
    """A demo row's values in `usage_columns_sql()`'s order, JSON columns encoded: ready for psycopg."""
    from llmlog.ingest.storage import JSON_COLUMNS, USAGE_FIELDS

    return tuple(
        json.dumps(row[f.attname]) if f.attname in JSON_COLUMNS else row[f.attname] for f in USAGE_FIELDS
    )
