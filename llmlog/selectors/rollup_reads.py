"""Which part of a query the hourly rollups answer, and the sums read that way.

The rollups (llmlog.rollups) hold, per UTC hour and (userorgid, model_name, status), the sums of that
hour's rows. A query they can answer (UsageQuery.rollups_can_answer: the org, the model, the status and
a time range, nothing else) is read from buckets for the whole hours inside its range that are closed,
built (before `built_through`) and not marked stale (UsageRollupStale: a change to one of their records
not rebuilt yet, or a rebuild that failed); the rest (the edges of the range, the open hour, hours not
built, marked hours) from the rows. The two parts never overlap and together are every record of the
query, so a total read this way is exactly the rows' total.

A `use_date` filter is not answered from rollups (queries.ROLLUP_FIELDS leaves `day` out): the column
holds the day in the TIME_ZONE at ingest, and rollups know only hours. After TIME_ZONE changes, the
hours of "day D in today's zone" are not the records whose use_date is D, so mixing them would count
some hours twice and miss others. Reading the rows of the day by its column is exact whatever zone
stamped them (the use_date index serves it; it is one day of rows).
"""

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from django.db.models import Q, QuerySet, Value

from llmlog.models import UsageRollup, UsageRollupStale, UsageRollupState
from llmlog.queries import UsageQuery
from llmlog.replicas import read_alias, replica_read
from llmlog.selectors.records import usage_matching
from llmlog.selectors.sums import rollup_sums, row_sums

HOUR = timedelta(hours=1)


def _floor_hour(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def _ceil_hour(moment: datetime) -> datetime:
    floor = _floor_hour(moment)
    return floor if floor == moment else floor + HOUR


@replica_read
def rollups_built_through() -> datetime | None:
    """Every UTC hour before this has its rollups built (None: none built yet)."""
    return _rollup_state()[0]


def _rollup_state() -> tuple[datetime | None, list[datetime]]:
    """(built_through, the hours marked stale), in one query: marks are few (each is cleared by the
    rebuild that follows its change), so all of them are read."""
    alias = read_alias()  # the same server as the rows and buckets read with it
    built = UsageRollupState.objects.using(alias).filter(name="usage").annotate(stale=Value(False))
    marks = UsageRollupStale.objects.using(alias).annotate(stale=Value(True))
    rows = built.values_list("stale", "built_through").union(marks.values_list("stale", "hour"), all=True)
    built_through, stale = None, []
    for is_mark, moment in rows:
        if is_mark:
            stale.append(moment)
        else:
            built_through = moment
    return built_through, stale


@dataclass(frozen=True)
class RollupWindow:
    """The UTC hours [lo, hi) read from buckets (lo None: from the first), but the `stale` ones."""

    lo: datetime | None
    hi: datetime
    stale: tuple[datetime, ...]

    def buckets(self, query: UsageQuery) -> QuerySet[UsageRollup]:
        """The buckets of the query's org, model and status in the window's built, unmarked hours."""
        buckets = UsageRollup.objects.using(read_alias()).filter(hour__lt=self.hi).order_by()
        if self.lo is not None:
            buckets = buckets.filter(hour__gte=self.lo)
        if self.stale:
            buckets = buckets.exclude(hour__in=self.stale)
        for name in ("userorgid", "model_name", "status"):
            if getattr(query, name) is not None:
                buckets = buckets.filter(**{name: getattr(query, name)})
        return buckets.filter(userorgid=query.org) if query.org else buckets

    def rows_condition(self) -> Q:
        """The records the buckets do not hold: outside [lo, hi), or in a stale hour (contiguous ones
        as one range, so a purge's day of marks is one condition, not 24)."""
        condition = Q(use_time__gte=self.hi)
        if self.lo is not None:
            condition |= Q(use_time__lt=self.lo)
        for start, end in _ranges(self.stale):
            condition |= Q(use_time__gte=start, use_time__lt=end)
        return condition

    @property
    def hours(self) -> list[datetime | None]:
        return [self.lo, self.hi]


def _ranges(hours: tuple[datetime, ...]) -> list[tuple[datetime, datetime]]:
    ranges: list[tuple[datetime, datetime]] = []
    for hour in sorted(hours):
        if ranges and ranges[-1][1] == hour:
            ranges[-1] = (ranges[-1][0], hour + HOUR)
        else:
            ranges.append((hour, hour + HOUR))
    return ranges


def rollup_window(query: UsageQuery, *, now: datetime) -> RollupWindow | None:
    """The part of `query` the rollups answer; None when they cannot answer any of it."""
    if not query.rollups_can_answer or query.finds_nothing:
        return None
    built_through, marks = _rollup_state()
    if built_through is None:
        return None
    lo = _ceil_hour(query.start) if query.start else None
    hi = _floor_hour(min(moment for moment in (query.end, built_through, now) if moment is not None))
    if lo is not None and lo >= hi:
        return None
    stale = tuple(sorted(hour for hour in marks if hour < hi and (lo is None or hour >= lo)))
    return RollupWindow(lo=lo, hi=hi, stale=stale)


def grouped_sums(
    *,
    query: UsageQuery,
    now: datetime,
    group_by: Callable[[str], dict[str, Any]],
) -> tuple[list[Mapping[str, Any]], RollupWindow | None]:
    """Sums of the records of `query`, grouped by `group_by(time column)` (the rollups' time column is
    `hour`, the rows' `use_time`); and the window read from rollups. The same group can come back twice
    (once from each source): callers add them up."""
    rows = usage_matching(query=query).order_by()
    window = rollup_window(query, now=now)
    groups: list[Mapping[str, Any]] = []
    if window is not None:
        groups += _values(window.buckets(query), group_by("hour")).annotate(**rollup_sums())
        rows = rows.filter(window.rows_condition())
    groups += _values(rows, group_by("use_time")).annotate(**row_sums())
    return groups, window


def _values(queryset: QuerySet, spec: dict[str, Any]) -> QuerySet:
    """values() by `spec`: a name mapped to None is the column itself, otherwise an expression."""
    columns = [name for name, expression in spec.items() if expression is None]
    expressions = {name: expression for name, expression in spec.items() if expression is not None}
    return queryset.values(*columns, **expressions)
