"""Re-pricing adjustments of the records a query names: what stats show beside the charges."""

from decimal import Decimal

from django.db.models import F, Sum

from accounting.models import RepricingItem
from core.money import quantize_money
from llmlog.queries import UsageQuery
from llmlog.selectors.records import usage_matching


def usage_adjustments(*, query: UsageQuery) -> Decimal:
    """The sum of Δamount that applied re-pricings posted as adjustments for the records of `query`
    (records keep their `amount`; amount + adjustments is what their orgs were charged in the end).

    Read from `RepricingItem` (an item with an adjustment is an applied one), restricted to the records
    of the query by id. Without any applied re-pricing, one cheap look-up answers 0.
    """
    applied = RepricingItem.objects.filter(adjustment__isnull=False)
    if query.org:
        applied = applied.filter(userorgid=query.org)
    if not applied.exists():
        return Decimal(0)
    in_scope = applied.filter(usage_id__in=usage_matching(query=query).order_by().values("id"))
    total = in_scope.aggregate(total=Sum(F("new_amount") - F("old_amount")))["total"]
    return quantize_money(Decimal(total or 0))  # SQLite sums decimals as floating point
