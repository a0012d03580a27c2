"""Provider cost drift: the cost llmlog computed (`cost`, from the price book) beside the cost the
gateway or provider reported (`provider_cost`), by provider, model and day (in TIME_ZONE).

A row sums the records of one (day, provider, model_name) under a UsageQuery:
- `records`: every record of the group; `records_with_both`: those with both a cost and a provider_cost;
- `cost`, `provider_cost`: sums over the records with both (so the two compare like with like);
- `delta` = provider_cost - cost; `delta_percent` = delta / cost * 100 (None when cost sums to 0);
- `over_threshold`: records with both whose |provider_cost - cost| passes LLMLOG_COST_DRIFT_ALERT
  percent of their cost (a cost of 0 with a reported cost that is not 0 is over);
  `over_share` = over_threshold / records_with_both.
Groups without a record with both are left out: nothing drifts there.

The comparison of each record is exact on both databases: money is compared in integer units of the
money column's last place (SQLite keeps a decimal column as a double) and the threshold as the ratio
of two integers.
"""

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db.models import BigIntegerField, Count, ExpressionWrapper, F, QuerySet, Sum, Value
from django.db.models.functions import Abs, Cast, Round, TruncDate
from django.db.models.lookups import GreaterThan
from django.utils import timezone

from core.money import MONEY_PLACES
from llmlog.queries import UsageQuery
from llmlog.replicas import replica_read
from llmlog.selectors.records import usage_matching

# The most rows one answer holds; the API says when there were more (`truncated`).
MAX_DRIFT_ROWS = 1000
# Sort orders: newest day first (the API), or the largest |delta| first (the dashboard's top rows).
BY_DAY = "day"
BY_DELTA = "delta"
PERCENT_PLACES = Decimal("0.01")
SHARE_PLACES = Decimal("0.0001")


@dataclass(frozen=True)
class DriftReport:
    rows: list[dict[str, Any]]
    truncated: bool
    threshold_percent: Decimal


def drift_threshold() -> Decimal:
    """LLMLOG_COST_DRIFT_ALERT as a Decimal percent."""
    return Decimal(str(settings.LLMLOG_COST_DRIFT_ALERT))


def _units(name: str) -> Cast:
    """A money column in integer units of its last place (exact on SQLite too)."""
    return Cast(Round(F(name) * Value(10**MONEY_PLACES)), BigIntegerField())


def over_threshold(threshold: Decimal) -> GreaterThan:
    """True for a record whose |provider_cost - cost| * 100 > threshold * cost, in integers: with the
    threshold p/q, |PC - C| * 100 * q > p * C. A cost of 0 with a reported cost other than 0 is over;
    a record without both is not (NULL)."""
    numerator, denominator = threshold.as_integer_ratio()
    gap = ExpressionWrapper(
        Abs(_units("provider_cost") - _units("cost")) * Value(100 * denominator),
        output_field=BigIntegerField(),
    )
    limit = ExpressionWrapper(_units("cost") * Value(numerator), output_field=BigIntegerField())
    return GreaterThan(gap, limit)


@replica_read  # one server for the whole report, as every usage read (llmlog.replicas)
def usage_cost_drift(
    *,
    query: UsageQuery,
    provider: str | None = None,
    order: str = BY_DAY,
    limit: int = MAX_DRIFT_ROWS,
) -> DriftReport:
    """The drift rows of the records of `query` (and of `provider`, when given): see the module.

    Two reads. The groups come from the records with both costs only (partial indexes on both usage
    tables find them without reading the others: most gateways report no provider cost, and the
    dashboard's 30 days used to read every record of the month for none); then `records`, every record of
    each group returned, from the returned groups' models and days alone."""
    threshold = drift_threshold()
    records = usage_matching(query=query).order_by()
    if provider is not None:
        records = records.filter(provider=provider)
    reported = _by_group(records.filter(cost__isnull=False, provider_cost__isnull=False)).annotate(
        records_with_both=Count("id"),
        computed=Sum("cost"),
        reported=Sum("provider_cost"),
        over=Count("id", filter=over_threshold(threshold)),
    )
    if order == BY_DELTA:
        reported = reported.annotate(_abs_delta=Abs(F("reported") - F("computed")))
    groups = list(reported.order_by(*_ORDERS[order])[: limit + 1])
    counts = _record_counts(records, groups[:limit])
    rows = [_row(group, counts[_key(group)]) for group in groups[:limit]]
    return DriftReport(rows=rows, truncated=len(groups) > limit, threshold_percent=threshold)


_ORDERS = {
    BY_DAY: ("-day", "provider", "model_name"),
    BY_DELTA: ("-_abs_delta", "-day", "provider", "model_name"),
}


def _by_group(records: QuerySet) -> QuerySet:
    """`records` grouped by (day in TIME_ZONE, provider, model_name)."""
    day = TruncDate("use_time", tzinfo=timezone.get_current_timezone())
    return records.annotate(day=day).values("day", "provider", "model_name")


def _key(group: dict[str, Any]) -> tuple[date, str, str]:
    day = group["day"]
    day = day if isinstance(day, date) else date.fromisoformat(str(day))
    return day, group["provider"], group["model_name"]


def _record_counts(records: QuerySet, groups: list[dict[str, Any]]) -> dict[tuple, int]:
    """Every record of each of `groups` (with a cost or not), counted over their models and days only."""
    if not groups:
        return {}
    days = [_key(group)[0] for group in groups]
    tz = timezone.get_current_timezone()
    start = datetime.combine(min(days), time.min, tzinfo=tz)
    end = datetime.combine(max(days) + timedelta(days=1), time.min, tzinfo=tz)
    span = records.filter(
        use_time__gte=start,
        use_time__lt=end,
        model_name__in={group["model_name"] for group in groups},
        provider__in={group["provider"] for group in groups},
    )
    return {_key(group): group["n"] for group in _by_group(span).annotate(n=Count("id"))}


def _row(group: dict[str, Any], records: int) -> dict[str, Any]:
    cost = Decimal(group["computed"] or 0)
    provider_cost = Decimal(group["reported"] or 0)
    delta = provider_cost - cost
    with_both = group["records_with_both"]
    day, provider, model_name = _key(group)
    return {
        "day": day,
        "provider": provider,
        "model_name": model_name,
        "records": records,
        "records_with_both": with_both,
        "cost": cost,
        "provider_cost": provider_cost,
        "delta": delta,
        "delta_percent": (delta / cost * 100).quantize(PERCENT_PLACES) if cost else None,
        "over_threshold": group["over"],
        "over_share": (Decimal(group["over"]) / with_both).quantize(SHARE_PLACES),
    }
