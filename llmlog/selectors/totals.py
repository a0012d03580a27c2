"""Counts and totals of a query: one rule for every entry point (the native /count/, each dialect's
total, new-api's /stat quota).

Whenever the hourly rollups can answer a query (its org, model, status and time range only), its count
and totals are read from them and the edges from the rows (llmlog.selectors.rollup_reads): exact, and a
few thousand buckets instead of every row. Otherwise the rows are counted, except for the one read
whose count may be estimated: every record of every org (or of history) when no rollups are built, on
PostgreSQL, from the planner's statistics, and the answer says `estimated`.
"""

from datetime import datetime
from typing import Any

from django.core.exceptions import EmptyResultSet
from django.db import connection, connections
from django.db.models import Count, QuerySet, Sum, Value
from django.utils import timezone

from llmlog.clickhouse.reads import clickhouse_usage_count, clickhouse_usage_total
from llmlog.models import UsageAll
from llmlog.queries import UsageQuery
from llmlog.replicas import read_alias, replica_read
from llmlog.selectors.records import usage_matching
from llmlog.selectors.rollup_reads import rollup_window
from llmlog.selectors.sums import add_sums, empty_totals, rollup_sums, row_sums


@replica_read
def usage_total(*, query: UsageQuery, now: datetime | None = None) -> dict[str, Any]:
    """{requests, <token kinds>: int, amount, cost: Decimal, rollup_hours: [lo, hi) read from the hourly
    rollups or None} of the records of `query`: from the rollups whenever they can answer, exactly."""
    totals = empty_totals()
    if query.finds_nothing:
        return {**totals, "rollup_hours": None}
    # History from ClickHouse when it holds it (llmlog.clickhouse.reads); None: read on here.
    answer = clickhouse_usage_total(query=query, records=usage_matching(query=query))
    if answer is not None:
        return answer
    rows = usage_matching(query=query).order_by()
    window = rollup_window(query, now=now or timezone.now())
    if window is not None:
        add_sums(totals, window.buckets(query).aggregate(**rollup_sums()))
        rows = rows.filter(window.rows_condition())
    add_sums(totals, rows.aggregate(**row_sums()))
    return {**totals, "rollup_hours": window.hours if window else None}


@replica_read
def usage_count(*, query: UsageQuery, now: datetime | None = None) -> dict[str, Any]:
    """{count, estimated}: how many records `query` names. Exact whenever the rollups can answer (the
    buckets' requests plus the edges' rows) and under any other filter; for every record of every org
    with no rollups built, PostgreSQL answers from the planner's statistics, and says so (`_count`)."""
    if query.finds_nothing:
        return {"count": 0, "estimated": False}
    # History from ClickHouse when it holds it (llmlog.clickhouse.reads); None: read on here.
    answer = clickhouse_usage_count(query=query, records=usage_matching(query=query))
    if answer is not None:
        return answer
    records = usage_matching(query=query)
    window = rollup_window(query, now=now or timezone.now())
    if window is not None:
        edges = records.filter(window.rows_condition())
        count = _scalars(window.buckets(query), Sum("requests"), edges, Count("id"))
        return {"count": count, "estimated": False}
    return _count(queryset=records, estimate=query.is_unfiltered and query.keyword is None)


def _scalars(*pairs: Any) -> int:
    """The sum of aggregates (queryset, aggregate, queryset, aggregate, ...), each a scalar sub-select
    of one statement: the buckets and the edges' rows in one round trip."""
    parts, params = [], []
    for queryset, aggregate in zip(pairs[::2], pairs[1::2], strict=True):
        single = queryset.order_by().annotate(_all=Value(1)).values("_all").annotate(value=aggregate)
        try:
            sql, part_params = single.values("value").query.sql_with_params()
        except EmptyResultSet:  # a condition nothing meets
            continue
        parts.append(f"COALESCE(({sql}), 0)")
        params += part_params
    if not parts:
        return 0
    with connections[read_alias()].cursor() as cursor:
        cursor.execute("SELECT " + " + ".join(parts), params)
        return int(cursor.fetchone()[0])


# The planner's row estimate of each named table; a partitioned table (llmusage_history on PostgreSQL)
# has none of its own, so its partitions' are summed. reltuples is -1 for a table never analysed: with
# no pages it reads 0 (relpages too is only set by VACUUM or ANALYZE, so rows may be there: usage_count
# counts below its floor), with pages the answer is NULL.
_ESTIMATE_SQL = """
    WITH tables AS (
        SELECT c.relname, COALESCE(part.oid, c.oid) AS oid
        FROM pg_class c
        LEFT JOIN pg_inherits i ON c.relkind = 'p' AND i.inhparent = c.oid
        LEFT JOIN pg_class part ON part.oid = i.inhrelid
        WHERE c.relname = ANY(%s) AND c.relkind IN ('r', 'p')
    )
    SELECT CASE WHEN bool_and(p.reltuples >= 0 OR p.relpages = 0) THEN sum(greatest(p.reltuples, 0)) END
    FROM tables t JOIN pg_class p ON p.oid = t.oid
    GROUP BY t.relname
"""


# Below this many rows an estimate is not worth giving: counting them costs about as much as reading
# the statistics, and a table's statistics can say 0 (or nothing) while it holds rows: never analysed
# (reltuples -1, relpages 0 until the first VACUUM), or analysed while empty and filled since.
COUNT_ESTIMATE_FLOOR = 10_000


def _count(*, queryset: QuerySet, estimate: bool = False) -> dict[str, Any]:
    """{count, estimated}. With `estimate` (a whole table, unfiltered) PostgreSQL answers from the
    planner's statistics instead of counting every row, and says so; elsewhere the count is exact.

    An estimate is never 0 for a table that has rows: below COUNT_ESTIMATE_FLOOR, or without
    statistics, the rows are counted up to the floor (a COUNT over a LIMIT, bounded work): fewer is the
    exact count, more is at least the floor, still `estimated`.
    """
    if not (estimate and connection.vendor == "postgresql"):
        return {"count": queryset.order_by().count(), "estimated": False}
    model = queryset.model
    tables = ["llmusage", "llmusage_history"] if model is UsageAll else [model._meta.db_table]
    with connections[queryset.db].cursor() as cursor:
        cursor.execute(_ESTIMATE_SQL, [tables])
        estimates = [row[0] for row in cursor.fetchall()]
    # NULL when a table (or a partition holding rows) was never vacuumed or analysed: no estimate.
    known = len(estimates) == len(tables) and all(value is not None for value in estimates)
    planned = int(sum(estimates)) if known else 0
    if planned >= max(COUNT_ESTIMATE_FLOOR, 1):
        return {"count": planned, "estimated": True}
    counted = queryset.order_by()[: COUNT_ESTIMATE_FLOOR + 1].count()
    if counted <= COUNT_ESTIMATE_FLOOR:
        return {"count": counted, "estimated": False}
    return {"count": max(planned, counted), "estimated": True}
