"""Reads that ClickHouse answers: whether it can answer a UsageQuery, and the answers.

A query is split at the mirror's mark (llmlog.clickhouse.mirror): the history records moved up to the
mark are read from ClickHouse, every other record of the query (hot ones, history moved since) from
PostgreSQL; the two parts never overlap and together are every record, so the sums add up exactly
(tokens as int, money as Decimal from Decimal(18, 5) columns on both sides, never a float).

ClickHouse answers the filters it holds columns for: the time range, the day, the equality filters,
amount bounds and key hashes, the caller's org. A keyword search, a dialect's own condition (OneUptime's
operators) or an id list are PostgreSQL's. Each function returns None when ClickHouse cannot answer
(not configured, not in sync, such a filter, or the server failed: logged), and the caller reads
PostgreSQL as it does without ClickHouse.
"""

import heapq
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from django.db.models import QuerySet
from django.db.models.functions import TruncDate
from django.utils import timezone

from llmlog.clickhouse.client import ClickHouseUnavailable, clickhouse_configured, clickhouse_execute
from llmlog.clickhouse.mirror import history_rows_condition, synced_through
from llmlog.clickhouse.schema import TABLE, history_columns, micros, quote
from llmlog.models import UsageRollupState
from llmlog.queries import ALL, EQUALITY_COLUMNS, HISTORY, NULLABLE_ORDERING_FIELDS, Ordering, UsageQuery
from llmlog.selectors.sums import MONEY_FIELDS, TOKEN_FIELDS, add_sums, empty_totals, row_sums

logger = logging.getLogger(__name__)

ZERO_MONEY = "toDecimal64(0, 5)"


@dataclass(frozen=True)
class Split:
    """A query split at the mark: ClickHouse's WHERE (and its parameters), PostgreSQL's records."""

    where: str
    params: dict[str, Any]
    rest: QuerySet

    def sums_sql(self, keys: Mapping[str, str]) -> str:
        """SELECT of the sums of the query's ClickHouse part, grouped by `keys` (name -> expression)."""
        parts = [f"{expression} AS {name}" for name, expression in keys.items()]
        parts.append("count() AS requests")
        # Not aliased by the column's own name: ClickHouse resolves aliases inside expressions.
        parts += [f"sum({quote(name)}) AS sum_{name}" for name in (*TOKEN_FIELDS, *MONEY_FIELDS)]
        sql = f"SELECT {', '.join(parts)} FROM {TABLE} FINAL WHERE {self.where}"
        return f"{sql} GROUP BY {', '.join(keys)}" if keys else sql


def _where(query: UsageQuery, mark: datetime) -> tuple[str, dict[str, Any]] | None:
    """The query's filters as ClickHouse's WHERE over the records mirrored by `mark`; None when one is
    not ClickHouse's to answer."""
    if query.keyword is not None or query.keyword_terms is not None or query.where is not None:
        return None
    if query.ids is not None or query.source not in (ALL, HISTORY):
        return None
    where, params = ["backup_time <= %(mark)s"], {"mark": micros(mark)}
    if query.org:
        where.append("userorgid = %(org)s")
        params["org"] = query.org
    if query.start is not None:
        where.append("use_time >= %(start)s")
        params["start"] = micros(query.start)
    if query.end is not None:
        where.append("use_time < %(end)s")
        params["end"] = micros(query.end)
    if query.day is not None:
        where.append("use_date = toDate(%(day)s)")
        params["day"] = query.day.isoformat()
    for name, column in EQUALITY_COLUMNS.items():
        if getattr(query, name) is not None:
            where.append(f"{quote(column)} = %({name})s")
            params[name] = getattr(query, name)
    for name, operator in (("min_amount", ">="), ("max_amount", "<=")):
        if getattr(query, name) is not None:
            where.append(f"amount {operator} toDecimal64(%({name})s, 5)")
            params[name] = str(getattr(query, name))
    if query.token_key_hashes is not None:
        where.append("token_key_hash IN %(hashes)s" if query.token_key_hashes else "0")
        params["hashes"] = tuple(query.token_key_hashes)
    return " AND ".join(where), params


def clickhouse_split(query: UsageQuery, records: QuerySet) -> Split | None:
    """The query split at the mark, or None when ClickHouse is not to answer it. `records` are the
    query's records in PostgreSQL (llmlog.selectors.records.usage_matching: the selectors pass them, as
    they read through this module).

    A query PostgreSQL's hourly rollups answer (org, model, status, time range) stays there once they
    are built: a few thousand buckets beat any scan, ClickHouse's included (docs/scaling.md measures it).
    """
    if not clickhouse_configured() or query.finds_nothing:
        return None
    if query.rollups_can_answer and _rollups_built(records.db):
        return None
    mark = synced_through(using=records.db)
    found = _where(query, mark) if mark is not None else None
    if found is None:
        return None
    rest = records.order_by().filter(history_rows_condition(mark))
    return Split(where=found[0], params=found[1], rest=rest)


def _rollups_built(using: str) -> bool:
    """Whether PostgreSQL's hourly rollups are built (llmlog.selectors.rollup_reads reads the same row;
    not imported: the selectors import this module)."""
    return UsageRollupState.objects.using(using).filter(name="usage", built_through__isnull=False).exists()


def _run(sql: str, params: dict[str, Any]) -> list[tuple] | None:
    try:
        return clickhouse_execute(sql, params)
    except ClickHouseUnavailable as exc:
        logger.warning("clickhouse: read failed, answering from PostgreSQL: %s", exc)
        return None


def _day_key() -> tuple[str, Any]:
    """The day in TIME_ZONE of a record's use_time: ClickHouse's expression, PostgreSQL's."""
    zone = timezone.get_current_timezone()
    name = getattr(zone, "key", None) or str(zone)
    clickhouse = f"toYYYYMMDD(toDateTime(intDiv(use_time, 1000000)), '{name}')"
    return clickhouse, TruncDate("use_time", tzinfo=zone)


def clickhouse_grouped_sums(
    *, query: UsageQuery, records: QuerySet, by: tuple[str, ...]
) -> list[dict[str, Any]] | None:
    """The sums of the records of `query` grouped by `by` (columns, and "day": the day in TIME_ZONE),
    from both parts: the same group may come twice (callers add them up). None: not ClickHouse's."""
    split = clickhouse_split(query, records)
    if split is None:
        return None
    day_clickhouse, day_postgresql = _day_key()
    keys = {name: day_clickhouse if name == "day" else quote(name) for name in by}
    rows = _run(split.sums_sql(keys), split.params)
    if rows is None:
        return None
    names = [*keys, "requests", *TOKEN_FIELDS, *MONEY_FIELDS]
    groups = [dict(zip(names, row, strict=True)) for row in rows]
    for group in groups:
        if "day" in group:
            number = int(group["day"])
            group["day"] = date(number // 10000, number // 100 % 100, number % 100)
    columns = [name for name in by if name != "day"]
    expressions = {"day": day_postgresql} if "day" in by else {}
    if by:
        groups += split.rest.values(*columns, **expressions).annotate(**row_sums())
    else:
        groups.append(split.rest.aggregate(**row_sums()))
    return groups


def clickhouse_usage_total(*, query: UsageQuery, records: QuerySet) -> dict[str, Any] | None:
    """usage_total's answer (rollup_hours None), or None: not ClickHouse's."""
    groups = clickhouse_grouped_sums(query=query, records=records, by=())
    if groups is None:
        return None
    totals = empty_totals()
    for group in groups:
        add_sums(totals, group)
    return {**totals, "rollup_hours": None}


def clickhouse_usage_count(*, query: UsageQuery, records: QuerySet) -> dict[str, Any] | None:
    """usage_count's answer (exact), or None: not ClickHouse's."""
    split = clickhouse_split(query, records)
    if split is None:
        return None
    rows = _run(f"SELECT count() FROM {TABLE} FINAL WHERE {split.where}", split.params)
    if rows is None:
        return None
    return {"count": int(rows[0][0]) + split.rest.count(), "estimated": False}


def page_sql(split: Split, ordering: Ordering, attnames: list[str]) -> str:
    """SELECT of the first %(_depth)s records of the ClickHouse part in `ordering` (ties by id)."""
    by_attname = {column.attname: column for column in history_columns()}
    sort = quote(ordering.field)
    if ordering.field in NULLABLE_ORDERING_FIELDS:
        sort = f"ifNull({sort}, {ZERO_MONEY})"
    direction = " DESC" if ordering.descending else ""
    selected = ", ".join(quote(by_attname[name].name) for name in attnames)
    return (
        f"SELECT {selected} FROM {TABLE} FINAL WHERE {split.where} "
        f"ORDER BY {sort}{direction}, id{direction} LIMIT %(_depth)s"
    )


def clickhouse_usage_page(
    *, query: UsageQuery, records: QuerySet, offset: int, limit: int, columns: tuple[str, ...]
) -> list[dict[str, Any]] | None:
    """usage_page's answer: the first offset + limit of each part in the query's order, merged, then
    the page. None: not ClickHouse's (by use_time, or an order a dialect spells itself)."""
    ordering = query.ordering
    # Newest or oldest first, PostgreSQL's (userorgid, use_time) indexes serve a page at any depth, and
    # measured faster than ClickHouse 18.16's FINAL and sort (docs/scaling.md); ClickHouse takes the
    # orders PostgreSQL must sort the filtered rows for (amount, cost, total_tokens).
    if not isinstance(ordering, Ordering) or ordering.field == "use_time":
        return None
    split = clickhouse_split(query, records)
    if split is None:
        return None
    by_attname = {column.attname: column for column in history_columns()}
    wanted = list(dict.fromkeys([*columns, ordering.field, "id"]))
    if any(name not in by_attname for name in wanted):
        return None
    rows = _run(page_sql(split, ordering, wanted), {**split.params, "_depth": offset + limit})
    if rows is None:
        return None
    history = [
        {name: by_attname[name].from_clickhouse(value) for name, value in zip(wanted, row, strict=True)}
        for row in rows
    ]
    rest = list(ordering.apply(split.rest).values(*wanted)[: offset + limit])

    def key(row: dict[str, Any]) -> tuple:
        value = row[ordering.field]
        if value is None and ordering.field in NULLABLE_ORDERING_FIELDS:
            value = Decimal(0)
        return value, str(row["id"])

    merged = heapq.merge(history, rest, key=key, reverse=ordering.descending)
    page = list(merged)[offset : offset + limit]
    return [{name: row[name] for name in columns} for row in page]
