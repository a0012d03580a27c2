"""The hourly rollups (`llmusage_rollup`, llmlog.rollups) mirrored into ClickHouse, for the tools that
read ClickHouse directly (Grafana, Metabase): hourly sums of every record, hot ones included, as fresh
as PostgreSQL's buckets (history in ClickHouse lags up to a day; these do not).

PostgreSQL rebuilds an hour by replacing its buckets (late records, posting-time pricing, edits,
re-pricing), and an hour whose records all go loses them; once the rebuild is done nothing says which
hours changed. So each sync compares the two sides per UTC day of `hour`, one GROUP BY on each: the
count of buckets and the sum of every numeric column. The bucket ids are summed too: a rebuild takes new
ids from PostgreSQL's sequence, so a rebuilt hour moves its day's sums even when its figures come out
the same and a worker's clock put an older built_at on them.

The days that differ are replaced whole: loaded into a staging table of the same shape, then swapped
in partition by partition (`REPLACE PARTITION ... FROM`: a reader sees the old day or the new one, never
a gap or both), and the days PostgreSQL no longer has are dropped. No mutation: an ALTER ... DELETE
rewrites parts in the background (on 18.16 every part of the table), and a sync every 5 minutes would
keep the table rewriting. A rerun finds every day equal and writes nothing; a sync that dies half way
leaves days that still differ, which the next one replaces (the staging table is emptied before each
load).

Called by llmlog.clickhouse.mirror's sync and backfill, in a transaction holding the mirror's lock: the
staging table is one, and two syncs must not load it at once.
"""

from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from django.db.models import BigIntegerField, Count, F, Func, Q, QuerySet, Sum

from llmlog.clickhouse.client import PARTITIONS_SQL, clickhouse_execute
from llmlog.clickhouse.schema import (
    DAY_MICROSECONDS,
    EPOCH,
    EPOCH_MICROSECONDS_SQL,
    ROLLUP_STAGING_TABLE,
    ROLLUP_TABLE,
    Column,
    insert_records,
    micros,
    quote,
    rollup_columns,
)
from llmlog.models import UsageRollup

# Days per load: an INSERT makes a part per partition (day) it touches, and today's engine refuses one
# that touches over 100 (max_partitions_per_insert_block).
DAYS_PER_LOAD = 31
INT64_WRAP = 2**64


def rollups_sync(*, start: date | None = None, end: date | None = None) -> dict[str, int]:
    """Make ClickHouse's rollups of the UTC days in [start, end] (None: open) equal PostgreSQL's, bucket
    for bucket: the days that differ are replaced, those PostgreSQL no longer has dropped. Inside a
    transaction (the load's cursor lives in it) holding the mirror's lock."""
    postgresql = _day_keys_postgresql(start=start, end=end)
    sql, params = rollup_day_keys_sql(start=start, end=end)
    clickhouse = {row[0]: rollup_day_key(row[1:]) for row in clickhouse_execute(sql, params)}
    days = postgresql.keys() | clickhouse.keys()
    differing = sorted(day for day in days if postgresql.get(day) != clickhouse.get(day))
    loaded = 0
    for index in range(0, len(differing), DAYS_PER_LOAD):
        loaded += _replace_days(differing[index : index + DAYS_PER_LOAD])
    return {"days_checked": len(days), "days_replaced": len(differing), "loaded": loaded}


def summed_columns() -> tuple[Column, ...]:
    """The columns a day's key sums: every one but the text (the bucket's dimensions)."""
    return tuple(column for column in rollup_columns() if column.type != "String")


def rollup_day_key(values: tuple | list) -> tuple:
    """A day's bucket count and sums as both sides compare them: money as Decimal, and integers wrapped
    at 64 bits as ClickHouse's sum of an Int64 column is (PostgreSQL's sum is exact; a day's sum of hours
    in microseconds passes 2**63 at a few thousand buckets)."""
    count, *sums = values
    key: list[Any] = [int(count)]
    for column, value in zip(summed_columns(), sums, strict=True):
        if column.type.startswith("Decimal"):
            key.append(Decimal(value))
        else:
            key.append((int(value) + INT64_WRAP // 2) % INT64_WRAP - INT64_WRAP // 2)
    return tuple(key)


def _midnight(day: int) -> datetime:
    """The start of a UTC day given as days since the epoch (the rollups' partition)."""
    return EPOCH + timedelta(days=day)


def _hour_bounds(start: date | None, end: date | None) -> tuple[datetime | None, datetime | None]:
    """The hours of the UTC days [start, end]: from start's midnight to the one after end."""
    first = _midnight((start - EPOCH.date()).days) if start else None
    after = _midnight((end - EPOCH.date()).days + 1) if end else None
    return first, after


def _buckets(*, start: date | None, end: date | None) -> QuerySet[UsageRollup]:
    first, after = _hour_bounds(start, end)
    buckets = UsageRollup.objects.order_by()
    if first is not None:
        buckets = buckets.filter(hour__gte=first)
    if after is not None:
        buckets = buckets.filter(hour__lt=after)
    return buckets


def _day_keys_postgresql(*, start: date | None, end: date | None) -> dict[int, tuple]:
    day = Func(
        F("hour"), template=f"{EPOCH_MICROSECONDS_SQL} / {DAY_MICROSECONDS}", output_field=BigIntegerField()
    )
    sums = {f"sum_{column.name}": Sum(column.source) for column in summed_columns()}
    rows = _buckets(start=start, end=end).annotate(day=day).values("day").annotate(n=Count("pk"), **sums)
    return {row["day"]: rollup_day_key([row["n"], *(row[name] for name in sums)]) for row in rows}


def rollup_day_keys_sql(*, start: date | None, end: date | None) -> tuple[str, dict[str, Any]]:
    """Per UTC day (days since the epoch) of the rollups in [start, end]: count, then the sum of each
    summed column."""
    first, after = _hour_bounds(start, end)
    where, params = [], {}
    if first is not None:
        where.append("hour >= %(first)s")
        params["first"] = micros(first)
    if after is not None:
        where.append("hour < %(after)s")
        params["after"] = micros(after)
    sums = ", ".join(f"sum({quote(column.name)})" for column in summed_columns())
    condition = f" WHERE {' AND '.join(where)}" if where else ""
    sql = (
        f"SELECT intDiv(hour, {DAY_MICROSECONDS}) AS day, count(), {sums} FROM {ROLLUP_TABLE} FINAL"
        f"{condition} GROUP BY day"
    )
    return sql, params


def _replace_days(days: list[int]) -> int:
    """Load PostgreSQL's buckets of `days` into the staging table and swap each day in; a day with no
    bucket there any more (emptied, possibly since the comparison) is dropped. Returns buckets loaded."""
    clickhouse_execute(f"TRUNCATE TABLE {ROLLUP_STAGING_TABLE}")
    hours = Q()
    for day in days:
        hours |= Q(hour__gte=_midnight(day), hour__lt=_midnight(day + 1))
    buckets = UsageRollup.objects.filter(hours)
    loaded = insert_records(buckets, table=ROLLUP_STAGING_TABLE, columns=rollup_columns())
    staged = {int(row[0]) for row in clickhouse_execute(PARTITIONS_SQL, {"t": ROLLUP_STAGING_TABLE})}
    for day in days:
        clickhouse_execute(swap_day_sql(day, staged=day in staged))
    return loaded


def swap_day_sql(day: int, *, staged: bool) -> str:
    """The day's partition replaced by the staging table's (atomic), or dropped when nothing is staged
    for it (today's engine refuses to replace a partition from an empty one)."""
    if staged:
        return f"ALTER TABLE {ROLLUP_TABLE} REPLACE PARTITION {int(day)} FROM {ROLLUP_STAGING_TABLE}"
    return f"ALTER TABLE {ROLLUP_TABLE} DROP PARTITION {int(day)}"
