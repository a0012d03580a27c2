"""Hourly usage rollups: per UTC hour and (userorgid, model_name, status), the sums stats need.

Stats over long ranges read a few thousand buckets instead of millions of rows (llmlog.selectors.
stats.usage_stats). A bucket is always rebuilt whole from the rows of its hour (hot and history alike,
through `llmusage_all`), so a rebuild is idempotent and picks up whatever arrived late.

`UsageRollupState.built_through` says how far the rollups go: every hour before it is built, so stats
read rollups for those hours and rows for the rest. `scanned_at` is the watermark for late records:
each run looks at the records ingested since the last run (llmusage ids are uuid7, stamped at ingest,
so "ingested since" is a range of the primary key index) and rebuilds their hours when already built.

Every other change to a record's money, tokens, status or time (posting-time pricing, an edit, a delete,
a purge) goes through `usage_rollups_refresh`: it marks the record's hour stale (`UsageRollupStale`) in
the transaction that makes the change, and rebuilds the hour once that transaction commits. A reader
(llmlog.selectors.rollup_reads) reads a marked hour from its rows, so an answer that rests on the
rollups is exact before, during and after the rebuild; a rebuild that fails, or a process that dies
before it, leaves the mark, and the next run of the job rebuilds the hour. The rebuild runs after the
commit, not inside the change's transaction: posting holds account locks there, and an hour's rebuild
(an INSERT ... SELECT over its rows) under them would make every posting worker wait on it.
"""

import logging
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from django.db import DatabaseError, connection, transaction
from django.db.models import Count, Min, Sum, Value
from django.db.models.functions import Coalesce, TruncHour
from django.utils import timezone

from llmlog.jobs import job_run
from llmlog.models import (
    TOKEN_COUNT_FIELDS,
    LLMUsage,
    UsageAll,
    UsageRollup,
    UsageRollupStale,
    UsageRollupState,
)

logger = logging.getLogger(__name__)

ROLLUP_JOB = "build_usage_rollups"
HOUR = timedelta(hours=1)
# An hour is built once it has been over for this long: gateways report a call when it ends, so the
# records of an hour keep arriving for a few minutes after it. Later ones are caught as late records.
SETTLE = timedelta(minutes=10)
# Late-record scans overlap the previous one by this much: a record's id is stamped before its ingest
# transaction commits, so a slow transaction can commit ids older than the last scan.
SCAN_OVERLAP = timedelta(minutes=5)
# Hours rebuilt per transaction on a first build or a catch-up: a day of buckets (at most hours x orgs x
# models x 2) keeps each transaction short and lets a stopped run resume where it was.
CHUNK = timedelta(hours=24)
SUM_FIELDS = (*TOKEN_COUNT_FIELDS, "total_tokens", "amount", "cost")
BUCKET_FIELDS = ("hour", "userorgid", "model_name", "status")


def floor_hour(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def uuid7_floor(moment: datetime) -> uuid.UUID:
    """The smallest uuid7 stamped at `moment` or later (its first 48 bits are unix milliseconds)."""
    return uuid.UUID(int=int(moment.timestamp() * 1000) << 80)


def _sum_or_zero(name: str) -> Coalesce:
    field = UsageRollup._meta.get_field(name)
    return Coalesce(Sum(name), Value(0), output_field=field)


def _locked_state() -> UsageRollupState:
    """The state row, locked: builds run one at a time (a second waits, then sees the first's work)."""
    UsageRollupState.objects.get_or_create(name="usage")
    return UsageRollupState.objects.select_for_update().get(name="usage")


def _rebuild(start: datetime, end: datetime) -> int:
    """Replace the buckets of the hours in [start, end) with sums of their rows; inside a transaction."""
    UsageRollup.objects.filter(hour__gte=start, hour__lt=end).delete()
    groups = (
        UsageAll.objects.filter(use_time__gte=start, use_time__lt=end)
        .order_by()
        .values("userorgid", "model_name", "status", hour=TruncHour("use_time", tzinfo=UTC))
        .annotate(requests=Count("id"), **{name: _sum_or_zero(name) for name in SUM_FIELDS})
    )
    # INSERT ... SELECT: the sums go from the rows into the buckets inside the database, never
    # through Python objects (a first build writes hundreds of thousands of buckets).
    select, params = groups.query.sql_with_params()
    columns = ["userorgid", "model_name", "status", "hour", "requests", *SUM_FIELDS]
    quoted = ", ".join(connection.ops.quote_name(column) for column in columns)
    sql = (
        f"INSERT INTO {UsageRollup._meta.db_table} ({quoted}, built_at) "
        f"SELECT {quoted}, %s FROM ({select}) AS buckets"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, (timezone.now(), *params))
        return cursor.rowcount


def _rebuild_each_hour(start: datetime, end: datetime, counts: dict[str, Any]) -> None:
    """Rebuild [start, end) whole, or, when that fails, hour by hour, each in its own savepoint: an
    hour that fails alone (a sum past its column, say, from a row stored before ingest bounded it) is
    logged and added to counts["failed_hours"], keeps the buckets it had, and blocks no other hour.
    Inside a transaction."""
    try:
        with transaction.atomic():
            counts["buckets"] += _rebuild(start, end)
        return
    except (DatabaseError, OverflowError):
        pass  # find the hour(s) at fault
    for hour in (start + HOUR * i for i in range(int((end - start) / HOUR))):
        try:
            with transaction.atomic():
                counts["buckets"] += _rebuild(hour, hour + HOUR)
        except (DatabaseError, OverflowError) as exc:
            _failed(hour, exc, counts)


def _failed(hour: datetime, exc: Exception, counts: dict[str, Any]) -> None:
    """An hour whose rebuild failed: logged, counted, and marked stale with its error, so readers take
    its rows (its buckets are what they were, or none) and every later run tries it again."""
    error = f"{type(exc).__name__}: {exc}".strip()[:500]
    logger.error("rollup hour %s failed, left as it was: %s", hour.isoformat(), error)
    counts.setdefault("failed_hours", []).append({"hour": hour.isoformat(), "error": error})
    UsageRollupStale.objects.update_or_create(hour=hour, defaults={"error": error})


def usage_rollups_mark_stale(*, hours: Iterable[datetime]) -> None:
    """Mark these UTC hours stale, in the caller's transaction: from its commit on, readers take their
    rows. Each mark gets a new token, so a rebuild that started before this change keeps the mark.
    Hours in order, so two transactions marking the same hours lock them in the same order."""
    now = timezone.now()
    marks = [UsageRollupStale(hour=hour, token=uuid.uuid4(), marked_at=now) for hour in sorted(set(hours))]
    if marks:
        UsageRollupStale.objects.bulk_create(
            marks, update_conflicts=True, unique_fields=["hour"], update_fields=["token", "marked_at"]
        )


def usage_rollups_mark_late(*, use_times: Iterable[datetime], now: datetime | None = None) -> None:
    """Records being written into hours the build may already have summed (older than SETTLE): their
    hours are marked stale in the writer's transaction, so every total reads those hours' rows from the
    commit on, instead of short buckets until the next late-record scan rebuilds them."""
    cutoff = (now or timezone.now()) - SETTLE
    usage_rollups_mark_stale(hours={floor_hour(moment) for moment in use_times if moment < cutoff})


def _refresh_hour(hour: datetime, counts: dict[str, Any]) -> None:
    """Rebuild a (possibly stale) hour if it is built, and clear its mark unless it was marked again
    meanwhile. The token is read first: a change committed before it is in the rows the rebuild reads;
    one still uncommitted holds the mark's row lock, so the DELETE waits and then sees a new token."""
    with transaction.atomic():
        state = _locked_state()
        token = UsageRollupStale.objects.filter(hour=hour).values_list("token", flat=True).first()
        if state.built_through and hour < state.built_through:
            try:
                with transaction.atomic():
                    counts["buckets"] += _rebuild(hour, hour + HOUR)
            except (DatabaseError, OverflowError) as exc:
                _failed(hour, exc, counts)
                return
            counts["hours"] += 1
        if token is not None:
            UsageRollupStale.objects.filter(hour=hour, token=token).delete()


def usage_rollups_rebuild(*, start: datetime, end: datetime) -> int:
    """Rebuild every UTC hour in [start, end) (widened to whole hours) from the rows; returns how many
    buckets were written. Idempotent: a rebuild replaces the hour's buckets."""
    start, end = floor_hour(start), floor_hour(end - timedelta(microseconds=1)) + HOUR
    buckets = 0
    chunk_start = start
    while chunk_start < end:
        chunk_end = min(chunk_start + CHUNK, end)
        with transaction.atomic():
            _locked_state()
            buckets += _rebuild(chunk_start, chunk_end)
        chunk_start = chunk_end
    return buckets


def usage_rollups_refresh(*, use_times: Iterable[datetime]) -> int:
    """After records of these use_times changed or went away: mark their hours stale in the caller's
    transaction, and rebuild them (an hour per transaction; a bulk delete can touch thousands) once it
    commits. Returns how many hours were marked."""
    hours = sorted({floor_hour(moment) for moment in use_times})
    if hours:
        usage_rollups_mark_stale(hours=hours)
        transaction.on_commit(lambda: usage_rollups_refresh_hours(hours=hours))
    return len(hours)


def usage_rollups_refresh_hours(*, hours: Iterable[datetime]) -> dict[str, Any]:
    """Rebuild these hours if built and clear their marks; {hours, buckets[, failed_hours]}."""
    counts: dict[str, Any] = {"hours": 0, "buckets": 0}
    for hour in sorted(set(hours)):
        _refresh_hour(hour, counts)
    return counts


def usage_rollups_hours_before(moment: datetime) -> list[datetime]:
    """The built hours a purge of every record before `moment` may empty: from the oldest bucket
    through the hour of `moment`. The purge marks them stale before it deletes and refreshes them after
    (usage_rollups_refresh_hours), so a purge that stops half way leaves marks, not wrong buckets.

    An hour older than the oldest bucket had no records when it was built, and a purge adds none, so
    nightly this is about a day: the hours the last purge left and the new ones it reached.
    """
    oldest = UsageRollup.objects.filter(hour__lt=moment).aggregate(oldest=Min("hour"))["oldest"]
    state = UsageRollupState.objects.filter(name="usage").values_list("built_through", flat=True)
    built_through = state.first()
    if oldest is None or built_through is None:
        return []
    end = min(floor_hour(moment) + HOUR, built_through)
    oldest = floor_hour(oldest)
    return [oldest + HOUR * i for i in range(max(int((end - oldest) / HOUR), 0))]


def build_usage_rollups(*, now: datetime | None = None) -> dict[str, Any]:
    """The periodic job: build every closed hour not built yet, and rebuild the built hours that late
    records landed in. Returns what it did: {hours, late_hours, buckets, built_through, and
    failed_hours: [{hour, error}] when some hour could not be built}; the run is recorded as a JobRun,
    whose error names the failed hours. A failed hour never stops the build: the hours after it are
    built, and it is tried again on the next run."""
    with job_run(ROLLUP_JOB) as run:
        run.counts = _build(now=now or timezone.now())
        failed = run.counts.get("failed_hours", [])
        if failed:
            run.error = f"{len(failed)} hour(s) not built: " + "; ".join(
                f"{item['hour']}: {item['error']}" for item in failed[:10]
            )
    return run.counts


def _build(*, now: datetime) -> dict[str, Any]:
    target = floor_hour(now - SETTLE)
    counts: dict[str, Any] = {"hours": 0, "late_hours": 0, "buckets": 0}

    with transaction.atomic():
        state = _locked_state()
        built_through, scanned_at = state.built_through, state.scanned_at
        if built_through is None:
            first = UsageAll.objects.aggregate(first=Min("use_time"))["first"]
            built_through = floor_hour(first) if first else target

    # Late records: ingested since the last scan into an hour that was already built.
    late_hours: list[datetime] = []
    if scanned_at is not None and state.built_through is not None:
        ingested = LLMUsage.objects.filter(
            id__gte=uuid7_floor(scanned_at - SCAN_OVERLAP), use_time__lt=state.built_through
        )
        late_hours = sorted(
            ingested.order_by()
            .annotate(hour=TruncHour("use_time", tzinfo=UTC))
            .values_list("hour", flat=True)
            .distinct()
        )

    # New closed hours, a chunk per transaction; the state moves with each chunk.
    while built_through < target:
        chunk_end = min(built_through + CHUNK, target)
        with transaction.atomic():
            state = _locked_state()
            if state.built_through and state.built_through >= chunk_end:  # another run got there first
                built_through = state.built_through
                continue
            _rebuild_each_hour(built_through, chunk_end, counts)
            counts["hours"] += int((chunk_end - built_through) / HOUR)
            state.built_through = built_through = chunk_end
            state.save(update_fields=["built_through", "updated_at"])

    # Late hours, and the hours marked stale (a change whose rebuild never ran, or failed).
    marked = UsageRollupStale.objects.filter(hour__lt=built_through).values_list("hour", flat=True)
    failed_now = {datetime.fromisoformat(item["hour"]) for item in counts.get("failed_hours", [])}
    again = {"hours": 0, "buckets": 0}
    for hour in sorted({*late_hours, *marked} - failed_now):
        _refresh_hour(hour, again)
        counts["late_hours"] += 1
    counts["buckets"] += again["buckets"]
    if again.get("failed_hours"):
        counts.setdefault("failed_hours", []).extend(again["failed_hours"])

    with transaction.atomic():
        state = _locked_state()
        state.built_through = max(filter(None, (state.built_through, built_through)))
        state.scanned_at = now
        state.save(update_fields=["built_through", "scanned_at", "updated_at"])
    counts["built_through"] = state.built_through.isoformat()
    return counts
