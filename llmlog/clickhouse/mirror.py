"""What ClickHouse holds of history, and up to when; and the hourly rollups beside it.

The mark (`synced_through`, kept in PostgreSQL as the `clickhouse` row of llmusage_rollup_state): every
history record with backup_time <= the mark is in ClickHouse, and ClickHouse holds no record of that
range that PostgreSQL does not. Readers take the records up to the mark from ClickHouse and the rest
(hot, and history moved since) from PostgreSQL, so an answer never misses or doubles a record, whether
the mirror is behind, ClickHouse is down or a sync died half way (NULL: nothing is trusted, readers use
PostgreSQL alone until a sync reconciles).

- `clickhouse_sync` (after each nightly move, and every few minutes from beat) writes the records moved
  since the mark and moves it. The mark never passes the start of a move still running: that run's
  batches have backup_time >= its start and may not be committed yet.
- With no mark (first run, or after a failed delete) it reconciles: per use_date it compares PostgreSQL's
  count and sums with ClickHouse's and reloads the days that differ. `backfill_clickhouse` does the same
  for a range of days.
- The purges (`llmlog.backup.purge_history`, `llmlog.retention.usage_delete_before`) clear the mark
  before deleting in PostgreSQL, delete the same records in ClickHouse after, and restore it; if
  ClickHouse fails meanwhile the mark stays clear and the next sync reconciles.
- The hourly rollups (`llmusage_rollup`, every record's, hot ones included) are mirrored too, for the
  tools that read ClickHouse directly: after history, each sync and the backfill compare them per UTC
  day and replace the days that differ whole (llmlog.clickhouse.rollup_mirror), in a transaction of
  their own under the same lock, so a failure there never holds back history's mark. They need no mark:
  nothing in llmlog reads them, and after each sync they are PostgreSQL's, bucket for bucket, as that
  sync read them.
Writes are idempotent (ReplacingMergeTree on the record's or the bucket's key, llmlog.clickhouse.schema).
"""

import logging
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Count, Min, Q, QuerySet, Sum
from django.utils import timezone

from llmlog.clickhouse.client import (
    PARTITIONS_SQL,
    ClickHouseUnavailable,
    clickhouse_configured,
    clickhouse_execute,
    clickhouse_wait_for_mutations,
)
from llmlog.clickhouse.rollup_mirror import rollups_sync
from llmlog.clickhouse.schema import (
    TABLE,
    history_columns,
    history_table_ddl,
    insert_records,
    micros,
    rollup_table_ddls,
)
from llmlog.models import JobRun, LLMUsageHistory, UsageRollupState

logger = logging.getLogger(__name__)

STATE_NAME = "clickhouse"
# The nightly move's job name (llmlog.backup.BACKUP_JOB, which imports this module).
MOVE_JOB = "backup_accounted_llmusage"

_tables_made: set[str] = set()


def synced_through(*, using: str = "default") -> datetime | None:
    """Every history record with backup_time <= this is in ClickHouse (None: not in sync). Readers ask
    the database they read the records from (a replica's mark is as old as its rows, so a record the
    replica still shows hot is never also counted from ClickHouse)."""
    if not clickhouse_configured():
        return None
    state = UsageRollupState.objects.using(using).filter(name=STATE_NAME)
    return state.values_list("built_through", flat=True).first()


def ensure_clickhouse_table() -> None:
    """Create the tables (history, the rollups and their staging twin) once per process and server."""
    if settings.CLICKHOUSE_URL not in _tables_made:
        for ddl in (history_table_ddl(), *rollup_table_ddls()):
            clickhouse_execute(ddl)
        _tables_made.add(settings.CLICKHOUSE_URL)


def _locked_state() -> UsageRollupState:
    UsageRollupState.objects.get_or_create(name=STATE_NAME)
    return UsageRollupState.objects.select_for_update().get(name=STATE_NAME)


def _set_mark(value: datetime | None) -> None:
    UsageRollupState.objects.update_or_create(name=STATE_NAME, defaults={"built_through": value})


def _safe_mark(*, own_run: int | None) -> datetime:
    """Now, or just before the start of a nightly move still running (not `own_run`, whose batches are
    committed): that run may have rows with a backup_time below now not committed yet."""
    running = JobRun.objects.filter(job=MOVE_JOB, status=JobRun.Status.RUNNING).exclude(pk=own_run)
    started = running.aggregate(first=Min("started_at"))["first"]
    now = timezone.now()
    return now if started is None or started > now else started - timedelta(microseconds=1)


def _load(records: QuerySet[LLMUsageHistory]) -> int:
    """Insert history `records` into ClickHouse (llmlog.clickhouse.schema.insert_records); how many."""
    return insert_records(records, table=TABLE, columns=history_columns())


def _mirror_rollups(*, start: date | None = None, end: date | None = None) -> dict[str, int]:
    """The rollups' mirror (llmlog.clickhouse.rollup_mirror) over the UTC days [start, end], in its own
    transaction under the mirror's lock: one at a time, and never holding back history's mark."""
    with transaction.atomic():
        _locked_state()
        return rollups_sync(start=start, end=end)


def clickhouse_sync(*, own_run: int | None = None) -> dict[str, Any]:
    """Write the history moved since the mark into ClickHouse and move the mark (reconcile every day
    when there is none), then make ClickHouse's rollups equal PostgreSQL's. Returns what it did; {} when
    ClickHouse is not configured. Raises ClickHouseUnavailable (the mark is then where the last success
    left it: readers keep reading PostgreSQL past it; rollup days still differing wait for the next)."""
    if not clickhouse_configured():
        return {}
    ensure_clickhouse_table()
    with transaction.atomic():
        state = _locked_state()  # one sync at a time; a purge's clearing of the mark waits for it
        mark = _safe_mark(own_run=own_run)
        if state.built_through is None:
            counts = _reconcile(mark=mark, start=None, end=None)
        else:
            moved = LLMUsageHistory.objects.filter(backup_time__gt=state.built_through, backup_time__lte=mark)
            counts = {"loaded": _load(moved)}
        state.built_through = max(mark, state.built_through or mark)
        state.save(update_fields=["built_through", "updated_at"])
    return {**counts, "synced_through": state.built_through.isoformat(), "rollups": _mirror_rollups()}


def clickhouse_sync_quietly(*, own_run: int | None = None) -> dict[str, Any]:
    """clickhouse_sync for callers that must not fail with ClickHouse (the nightly move): a failure is
    logged and reported, and the next sync catches up."""
    try:
        return clickhouse_sync(own_run=own_run)
    except ClickHouseUnavailable as exc:
        logger.warning("clickhouse: sync failed, the next one catches up: %s", exc)
        return {"error": str(exc)}


def clickhouse_backfill(*, start: date | None = None, end: date | None = None) -> dict[str, Any]:
    """Load what history already holds (use_date in [start, end], None: open), reloading each day whose
    count or sums differ between PostgreSQL and ClickHouse, and the rollups of the UTC days [start, end]
    (llmlog.clickhouse.rollup_mirror). Idempotent: a second run reloads nothing. Over every day, it also
    sets the mark."""
    if not clickhouse_configured():
        raise ClickHouseUnavailable("CLICKHOUSE_URL is not set")
    ensure_clickhouse_table()
    with transaction.atomic():
        state = _locked_state()
        mark = state.built_through or _safe_mark(own_run=None)
        counts = _reconcile(mark=mark, start=start, end=end)
        if state.built_through is None and start is None and end is None:
            state.built_through = mark
            state.save(update_fields=["built_through", "updated_at"])
    synced = state.built_through.isoformat() if state.built_through else None
    return {**counts, "synced_through": synced, "rollups": _mirror_rollups(start=start, end=end)}


def _day_sums_postgresql(*, mark: datetime, start: date | None, end: date | None) -> dict[date, tuple]:
    records = LLMUsageHistory.objects.filter(backup_time__lte=mark)
    if start is not None:
        records = records.filter(use_date__gte=start)
    if end is not None:
        records = records.filter(use_date__lte=end)
    rows = (
        records.order_by().values("use_date").annotate(n=Count("id"), amount=Sum("amount"), cost=Sum("cost"))
    )
    return {row["use_date"]: _day_key(row["n"], row["amount"], row["cost"]) for row in rows}


def _day_sums_clickhouse(*, mark: datetime, start: date | None, end: date | None) -> dict[date, tuple]:
    sql, params = day_sums_sql(mark=mark, start=start, end=end)
    return {day: _day_key(n, amount, cost) for day, n, amount, cost in clickhouse_execute(sql, params)}


def day_sums_sql(*, mark: datetime, start: date | None, end: date | None) -> tuple[str, dict[str, Any]]:
    """Per use_date in [start, end]: count, sum(amount), sum(cost) of the records mirrored by `mark`."""
    where, params = ["backup_time <= %(mark)s"], {"mark": micros(mark)}
    if start is not None:
        where.append("use_date >= toDate(%(start)s)")
        params["start"] = start.isoformat()
    if end is not None:
        where.append("use_date <= toDate(%(end)s)")
        params["end"] = end.isoformat()
    sql = (
        f"SELECT use_date, count() AS n, sum(amount) AS amount, sum(cost) AS cost FROM {TABLE} FINAL "
        f"WHERE {' AND '.join(where)} GROUP BY use_date"
    )
    return sql, params


def _day_key(count: int, amount: Decimal | None, cost: Decimal | None) -> tuple[int, Decimal, Decimal]:
    return int(count), amount or Decimal(0), cost or Decimal(0)


def _reconcile(*, mark: datetime, start: date | None, end: date | None) -> dict[str, int]:
    """Make ClickHouse's days in [start, end] hold what PostgreSQL's do, up to `mark`: the days whose
    count or sums differ are deleted in ClickHouse (one mutation) and loaded again whole."""
    postgresql = _day_sums_postgresql(mark=mark, start=start, end=end)
    clickhouse = _day_sums_clickhouse(mark=mark, start=start, end=end)
    differing = sorted(
        day for day in postgresql.keys() | clickhouse.keys() if postgresql.get(day) != clickhouse.get(day)
    )
    loaded = 0
    if differing:
        present = [day for day in differing if day in clickhouse]
        if present:
            clickhouse_execute(
                f"ALTER TABLE {TABLE} DELETE WHERE use_date IN %(days)s", {"days": tuple(present)}
            )
            clickhouse_wait_for_mutations(TABLE)
        reload = [day for day in differing if day in postgresql]
        # A month of days at a time: one pass over that month's partition each.
        for index in range(0, len(reload), 31):
            loaded += _load(LLMUsageHistory.objects.filter(use_date__in=reload[index : index + 31]))
    return {
        "days_checked": len(postgresql.keys() | clickhouse.keys()),
        "days_reloaded": len(differing),
        "loaded": loaded,
    }


def clickhouse_delete_begin() -> datetime | None:
    """Before a purge deletes history in PostgreSQL: clear the mark (readers use PostgreSQL alone until
    `clickhouse_delete_end`); returns it, for the end. None when not configured or not in sync."""
    if not clickhouse_configured():
        return None
    with transaction.atomic():
        state = _locked_state()
        mark, state.built_through = state.built_through, None
        state.save(update_fields=["built_through", "updated_at"])
    return mark


def clickhouse_delete_end(
    *, mark: datetime | None, where: str, params: dict[str, Any], months_before: date | None = None
) -> dict[str, Any]:
    """After the purge: delete in ClickHouse the records of `where` mirrored by `mark` (the months wholly
    before `months_before` by dropping their partitions), then restore the mark. On failure the mark
    stays clear (logged): the next sync reconciles the days."""
    if mark is None:
        return {}
    try:
        dropped = _drop_months(months_before) if months_before is not None else 0
        clickhouse_execute(delete_sql(where), {**params, "_mark": micros(mark)})
        clickhouse_wait_for_mutations(TABLE)
    except ClickHouseUnavailable as exc:
        logger.warning("clickhouse: purge not mirrored, the next sync reconciles: %s", exc)
        return {"error": str(exc)}
    with transaction.atomic():
        state = _locked_state()
        if state.built_through is None:  # a sync meanwhile may have reconciled and set its own
            state.built_through = mark
            state.save(update_fields=["built_through", "updated_at"])
    return {"partitions_dropped": dropped}


def delete_sql(where: str) -> str:
    """The mutation deleting the records of `where` mirrored by the mark (%(_mark)s)."""
    return f"ALTER TABLE {TABLE} DELETE WHERE backup_time <= %(_mark)s AND ({where})"


def _drop_months(before: date) -> int:
    """Drop the monthly partitions wholly before `before` (partition ids are YYYYMM)."""
    last = before.replace(day=1) - timedelta(days=1)  # the last month wholly before `before`
    months = [row[0] for row in clickhouse_execute(PARTITIONS_SQL, {"t": TABLE})]
    doomed = [month for month in months if int(month) <= last.year * 100 + last.month]
    for month in doomed:
        clickhouse_execute(f"ALTER TABLE {TABLE} DROP PARTITION {int(month)}")
    return len(doomed)


def history_rows_condition(mark: datetime) -> Q:
    """The usage records PostgreSQL answers when ClickHouse holds history up to `mark`: the hot ones
    (no backup_time) and history moved after it."""
    return Q(backup_time__isnull=True) | Q(backup_time__gt=mark)
