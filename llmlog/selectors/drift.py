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
from datetime import date
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db.models import BigIntegerField, Count, ExpressionWrapper, F, Q, Sum, Value
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
    """The drift rows of the records of `query` (and of `provider`, when given): see the module."""
    threshold = drift_threshold()
    records = usage_matching(query=query).order_by()
    if provider is not None:
        records = records.filter(provider=provider)
    both = Q(cost__isnull=False, provider_cost__isnull=False)
    tz = timezone.get_current_timezone()
    grouped = (
        records.annotate(day=TruncDate("use_time", tzinfo=tz))
        .values("day", "provider", "model_name")
        .annotate(
            records=Count("id"),
            records_with_both=Count("id", filter=both),
            computed=Sum("cost", filter=both),
            reported=Sum("provider_cost", filter=both),
            over=Count("id", filter=over_threshold(threshold)),
        )
        .filter(records_with_both__gt=0)
    )
    if order == BY_DELTA:
        grouped = grouped.annotate(_abs_delta=Abs(F("reported") - F("computed"))).order_by(
            "-_abs_delta", "-day", "provider", "model_name"
        )
    else:
        grouped = grouped.order_by("-day", "provider", "model_name")
    rows = [_row(group) for group in grouped[: limit + 1]]
    return DriftReport(rows=rows[:limit], truncated=len(rows) > limit, threshold_percent=threshold)


def _row(group: dict[str, Any]) -> dict[str, Any]:
    cost = Decimal(group["computed"] or 0)
    provider_cost = Decimal(group["reported"] or 0)
    delta = provider_cost - cost
    with_both = group["records_with_both"]
    day = group["day"]
    return {
        "day": day if isinstance(day, date) else date.fromisoformat(str(day)),
        "provider": group["provider"],
        "model_name": group["model_name"],
        "records": group["records"],
        "records_with_both": with_both,
        "cost": cost,
        "provider_cost": provider_cost,
        "delta": delta,
        "delta_percent": (delta / cost * 100).quantize(PERCENT_PLACES) if cost else None,
        "over_threshold": group["over"],
        "over_share": (Decimal(group["over"]) / with_both).quantize(SHARE_PLACES),
    }
