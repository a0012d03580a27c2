"""The nightly move of accounted records into history, and the retention purge of history.

`backup_accounted_llmusage` moves every accounted or skipped record of a past day from `llmusage` to
`llmusage_history` (same id, plus `backup_time`), batch by batch. Each batch inserts and deletes in one
transaction, so a crash or a kill at any moment loses nothing and doubles nothing, and a rerun moves
what is left. Rows never pass through Python: memory stays flat however many rows move.

On PostgreSQL one statement moves a batch (a DELETE ... RETURNING feeding an INSERT ... SELECT), and
the batch's rows are claimed with FOR UPDATE SKIP LOCKED: two runs at once share the work, neither
takes a row the other holds. On SQLite (the embedded default) a batch is an INSERT ... SELECT and a
DELETE over the same id range inside one write transaction; SQLite's single writer lock serializes
two runs batch by batch.

Pending and failed records are never selected, so never moved and never locked.

On PostgreSQL `llmusage_history` is partitioned by month of use_date (migration 0006, llmlog.partitions):
before moving, the backup creates the partitions of the months it is about to fill, and the purge drops
the months wholly before its cut-off (instant, no dead tuples) and deletes the rest in batches. The
purge then rebuilds the hourly rollups of the hours it emptied, so that stats and rows still agree.
"""

import logging
from datetime import date, datetime, time, timedelta
from typing import Any
from uuid import UUID

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import DatabaseError, connection, transaction
from django.db.models import Count, QuerySet
from django.utils import timezone

from llmlog.clickhouse.client import clickhouse_configured
from llmlog.clickhouse.mirror import clickhouse_delete_begin, clickhouse_delete_end, clickhouse_sync_quietly
from llmlog.jobs import job_run
from llmlog.models import AccountingStatus, LLMUsage, LLMUsageHistory
from llmlog.partitions import (
    drop_history_partition,
    ensure_history_months,
    history_partitions,
    month_start,
    next_month,
)
from llmlog.rollups import usage_rollups_hours_before, usage_rollups_mark_stale, usage_rollups_refresh_hours

logger = logging.getLogger(__name__)

# Records moved per transaction. Big enough that the per-statement cost is small next to the row work
# (the benchmark moves at close to the rate of one raw statement over the whole set), small enough that
# one batch commits in well under a second: row locks are brief, a kill loses at most one batch of
# work (rolled back, moved again by the rerun), and the WAL written per commit stays a few megabytes.
BACKUP_BATCH_SIZE = 10_000
# Rows deleted per purge transaction: each batch is short so that it never holds locks for long.
PURGE_BATCH_SIZE = 5_000
# How far past the start of its use_date a record's use_time may lie, whatever zone stamped it.
PURGE_ZONE_MARGIN = timedelta(hours=27)

MOVABLE = (AccountingStatus.ACCOUNTED, AccountingStatus.SKIPPED)
LEFT_BEHIND = (AccountingStatus.PENDING, AccountingStatus.FAILED)

BACKUP_JOB = "backup_accounted_llmusage"
PURGE_JOB = "purge_history"


def usage_columns() -> list[str]:
    """The columns a record keeps when it moves, from the models (never a hand-copied list)."""
    usage = [field.column for field in LLMUsage._meta.concrete_fields]
    history = [field.column for field in LLMUsageHistory._meta.concrete_fields]
    if set(history) - set(usage) != {"backup_time"} or set(usage) - set(history):
        raise ImproperlyConfigured("llmusage_history must have the columns of llmusage plus backup_time")
    return usage


def backup_accounted_llmusage(
    *, before: date | None = None, batch_size: int = BACKUP_BATCH_SIZE, dry_run: bool = False
) -> dict[str, Any]:
    """Move accounted and skipped records with `use_date < before` (default: today in TIME_ZONE) to history.

    Returns the counts: `moved`, and what stays behind in llmusage from before that day,
    `pending_left` and `failed_left`. A dry run moves nothing and reports `would_move`.
    """
    today = timezone.localdate()
    before = today if before is None else before
    if before > today:
        raise ValueError(f"before ({before}) must not be after today ({today}): only past days move")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if dry_run:
        counts = {"before": before.isoformat(), "dry_run": True, "moved": 0, "would_move": 0}
        counts["would_move"] = _eligible(before).count()
        counts.update(_left_behind(before))
        logger.info("backup dry run: %s", counts)
        return counts

    with job_run(BACKUP_JOB) as run:
        run.counts = {"before": before.isoformat(), "moved": 0, "batches": 0}
        columns = usage_columns()
        _prepare_history_partitions(before)
        move_batch = _move_batch_postgresql if connection.vendor == "postgresql" else _move_batch_sqlite
        # First pass: walk the ids upwards, taking only rows nobody holds (a concurrent run holds its
        # batch: it moves those). Last pass: from the start again, waiting for rows still held, so a
        # row held by a run that died or by any other writer is moved once it is released.
        for skip_locked in (True, False):
            after: UUID | str | None = None
            while True:
                moved, after = move_batch(
                    columns=columns, before=before, after=after, limit=batch_size, skip_locked=skip_locked
                )
                if not moved:
                    break
                run.counts["moved"] += moved
                run.counts["batches"] += 1
                logger.debug("backup batch: %d moved, %d so far", moved, run.counts["moved"])
                if moved < batch_size:  # the end of the ids: no need to look again past it
                    break
        run.counts.update(_left_behind(before))
        if clickhouse_configured():  # mirror what moved; if ClickHouse is down the next sync catches up
            run.counts["clickhouse"] = clickhouse_sync_quietly(own_run=run.pk)
        return dict(run.counts)


def _prepare_history_partitions(before: date) -> None:
    """Create the monthly history partitions this run fills: the months that hold movable records, and
    this month and the next (so a month's partition exists before its first row). Failing here never
    stops the backup: a row whose month has no partition goes to the DEFAULT partition, and the run that
    makes the month moves it out."""
    if connection.vendor != "postgresql":
        return
    this_month = month_start(timezone.localdate())
    try:
        ensure_history_months([*_movable_months(before), this_month, next_month(this_month)])
    except DatabaseError:  # a lock not granted in time, or a race with another writer; all rolled back
        logger.warning("backup: history partitions not created this run", exc_info=True)


def _movable_months(before: date) -> list[date]:
    """The months (first days) that hold movable records before `before`, oldest first: one probe of the
    use_date index per month found, never a scan. Only those months: a lone record of years ago must not
    make a partition for every month since (each partition costs every unpruned query a little)."""
    sql = """
        WITH RECURSIVE found(month) AS (
            SELECT date_trunc('month', min(use_date)::timestamp)::date FROM llmusage
            WHERE accounting_status = ANY(%(statuses)s) AND use_date < %(before)s
          UNION ALL
            SELECT (
                SELECT date_trunc('month', min(use_date)::timestamp)::date FROM llmusage
                WHERE accounting_status = ANY(%(statuses)s) AND use_date < %(before)s
                    AND use_date >= (found.month + interval '1 month')::date
            )
            FROM found WHERE found.month IS NOT NULL
        )
        SELECT month FROM found WHERE month IS NOT NULL
    """
    with connection.cursor() as cursor:
        cursor.execute(sql, {"statuses": [str(status) for status in MOVABLE], "before": before})
        return [month for (month,) in cursor.fetchall()]


def _eligible(before: date) -> QuerySet[LLMUsage]:
    return LLMUsage.objects.filter(accounting_status__in=MOVABLE, use_date__lt=before)


def _left_behind(before: date) -> dict[str, int]:
    """Pending and failed records of the days before `before`: they stay in llmusage until accounted."""
    found = dict(
        LLMUsage.objects.filter(accounting_status__in=LEFT_BEHIND, use_date__lt=before)
        .values_list("accounting_status")
        .annotate(n=Count("id"))
        .order_by()
    )
    return {f"{status}_left": found.get(status, 0) for status in LEFT_BEHIND}


def _quoted(columns: list[str]) -> str:
    return ", ".join(connection.ops.quote_name(column) for column in columns)


def _move_batch_postgresql(
    *, columns: list[str], before: date, after: UUID | str | None, limit: int, skip_locked: bool
) -> tuple[int, UUID | str | None]:
    """Move up to `limit` rows with id > `after` in one statement; returns (moved, highest id moved)."""
    cols = _quoted(columns)
    after_clause = "AND id > %(after)s" if after is not None else ""
    lock = "FOR UPDATE SKIP LOCKED" if skip_locked else "FOR UPDATE"
    # max(uuid) does not exist in PostgreSQL 15; the text form of a uuid sorts as the uuid does.
    sql = f"""
        WITH moved AS (
            DELETE FROM llmusage WHERE id IN (
                SELECT id FROM llmusage
                WHERE accounting_status = ANY(%(statuses)s) AND use_date < %(before)s {after_clause}
                ORDER BY id LIMIT %(limit)s
                {lock}
            )
            RETURNING {cols}
        ), inserted AS (
            INSERT INTO llmusage_history ({cols}, backup_time)
            SELECT {cols}, %(now)s FROM moved
            RETURNING id
        )
        SELECT count(*), max(id::text)::uuid FROM inserted
    """
    params = {
        "statuses": [str(status) for status in MOVABLE],
        "before": before,
        "after": after,
        "limit": limit,
        "now": timezone.now(),
    }
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(sql, params)
        moved, highest = cursor.fetchone()
    return moved, highest


def _move_batch_sqlite(
    *, columns: list[str], before: date, after: UUID | str | None, limit: int, skip_locked: bool
) -> tuple[int, UUID | str | None]:
    """Move up to `limit` rows with id > `after`: INSERT ... SELECT and DELETE of the same id range in one
    write transaction (no other writer can run in between, so both statements see the same rows)."""
    cols = _quoted(columns)
    where = "accounting_status IN (%s, %s) AND use_date < %s"
    params: list[Any] = [*(str(status) for status in MOVABLE), connection.ops.adapt_datefield_value(before)]
    if after is not None:
        where += " AND id > %s"
        params.append(after)
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            f"SELECT max(id) FROM (SELECT id FROM llmusage WHERE {where} ORDER BY id LIMIT %s)",
            [*params, limit],
        )
        (highest,) = cursor.fetchone()
        if highest is None:
            return 0, after
        batch = f"{where} AND id <= %s"
        now = connection.ops.adapt_datetimefield_value(timezone.now())
        cursor.execute(
            f"INSERT INTO llmusage_history ({cols}, backup_time) "
            f"SELECT {cols}, %s FROM llmusage WHERE {batch}",
            [now, *params, highest],
        )
        inserted = cursor.rowcount
        cursor.execute(f"DELETE FROM llmusage WHERE {batch}", [*params, highest])
        if cursor.rowcount != inserted:  # cannot happen under the write lock; never commit if it does
            raise RuntimeError(f"backup batch inserted {inserted} rows but deleted {cursor.rowcount}")
    return inserted, highest


def purge_history(
    *, before: date | None = None, batch_size: int = PURGE_BATCH_SIZE, dry_run: bool = False
) -> dict[str, Any]:
    """Delete history records with `use_date < before`, in short batches.

    Without `before`, the cut-off is today minus LLMLOG_HISTORY_RETENTION_DAYS, by `use_date`: retention
    is about how old the usage is (a record of day D is gone N days after D, however late it was
    accounted and moved). With retention unset and no `before`, nothing is deleted.
    """
    retention = settings.LLMLOG_HISTORY_RETENTION_DAYS
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    before = _purge_cutoff(before, retention)
    counts: dict[str, Any] = {
        "before": before.isoformat() if before else None,
        "retention_days": retention,
        "purged": 0,
    }
    if dry_run:
        counts["dry_run"] = True
        counts["would_purge"] = LLMUsageHistory.objects.filter(use_date__lt=before).count() if before else 0
        return counts

    with job_run(PURGE_JOB) as run:
        run.counts = {**counts, "batches": 0}
        if before is None:
            return dict(run.counts)
        # Rollups and rows agree: the hours a purge may empty are marked stale before it deletes (readers
        # take their rows until they are rebuilt, even if the purge stops half way) and rebuilt after it
        # from what is left (records still in llmusage: pending, failed, not moved yet).
        stale_hours = _hours_purge_may_empty(before)
        clickhouse_mark = clickhouse_delete_begin()  # ClickHouse unread until it has purged too
        with transaction.atomic():
            usage_rollups_mark_stale(hours=stale_hours)
        run.counts.update(_drop_history_months(before))
        run.counts["purged"] += run.counts["dropped_rows"]
        _delete_history_batches(before, batch_size=batch_size, counts=run.counts)
        run.counts["rollup_buckets"] = usage_rollups_refresh_hours(hours=stale_hours)["buckets"]
        if clickhouse_configured():
            run.counts["clickhouse"] = clickhouse_delete_end(
                mark=clickhouse_mark,
                where="use_date < toDate(%(before)s)",
                params={"before": before.isoformat()},
                months_before=before,
            )
        return dict(run.counts)


def _purge_cutoff(before: date | None, retention: int | None) -> date | None:
    """The day the purge deletes before: `before` as given, else today minus the retention, else None
    (retention unset: history is kept)."""
    if before is not None:
        return before
    if retention is None:
        logger.info("purge_history: LLMLOG_HISTORY_RETENTION_DAYS is unset, history is kept")
        return None
    return timezone.localdate() - timedelta(days=retention)


def _hours_purge_may_empty(before: date) -> list[datetime]:
    """The rollup hours that may hold records of the days before `before`. The purge goes by use_date,
    stamped in the TIME_ZONE of its day, which may not be today's: a day reaches at most 26 hours past
    its start in any zone (UTC-12 to UTC+14), hence PURGE_ZONE_MARGIN."""
    cutoff = datetime.combine(before, time.min, tzinfo=timezone.get_current_timezone())
    return usage_rollups_hours_before(cutoff + PURGE_ZONE_MARGIN)


def _delete_history_batches(before: date, *, batch_size: int, counts: dict[str, Any]) -> None:
    """Delete the history rows left before `before` (in partitions not dropped), `batch_size` per
    transaction until none is left, adding each batch to `counts` as it commits: a run that fails half
    way records what it deleted."""
    if connection.vendor == "postgresql":
        # The ids as an array (an InitPlan run once): each partition is then probed by its primary
        # key index. With `id IN (SELECT ...)` the planner hash-joins and reads every partition whole.
        sql = """
            DELETE FROM llmusage_history WHERE use_date < %(before)s AND id = ANY(ARRAY(
                SELECT id FROM llmusage_history WHERE use_date < %(before)s LIMIT %(limit)s
                FOR UPDATE SKIP LOCKED
            ))
        """
    else:
        sql = """
            DELETE FROM llmusage_history WHERE id IN (
                SELECT id FROM llmusage_history WHERE use_date < %(before)s LIMIT %(limit)s
            )
        """
    params = {"before": connection.ops.adapt_datefield_value(before), "limit": batch_size}
    while True:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(sql, params)
            deleted = cursor.rowcount
        if not deleted:
            break
        counts["purged"] += deleted
        counts["batches"] += 1


def _drop_history_months(before: date) -> dict[str, int]:
    """Drop the monthly partitions of history that end on or before `before` (every row in them is to be
    purged): {partitions_dropped, dropped_rows}. A month whose locks are not granted in time is left to
    the batched delete that follows."""
    dropped = {"partitions_dropped": 0, "dropped_rows": 0}
    for partition in history_partitions():
        if partition.is_default or partition.end > before:
            continue
        try:
            rows = drop_history_partition(partition)
        except DatabaseError:
            logger.warning(
                "purge: partition %s not dropped, deleting its rows instead", partition.name, exc_info=True
            )
            continue
        dropped["partitions_dropped"] += 1
        dropped["dropped_rows"] += rows
    return dropped
