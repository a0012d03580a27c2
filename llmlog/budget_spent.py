"""What a budget's scope spent in a period, summed from the usage rows (hot and history alike).

accounting.budgets calls this through LLMLOG_BUDGET_SPENT_SCANNER to seed a new budget's counter (it
never imports llmlog): a scan once per budget, never per hold. Every record counts, whatever its
accounting status; a record not priced yet counts 0 until posting prices it."""

from datetime import datetime
from decimal import Decimal

from django.db.models import Sum

from llmlog.models import UsageAll


def spent_in_period(
    *,
    org: str,
    userid: str = "",
    token_name: str = "",
    model_name: str = "",
    feature: str = "",
    start: datetime,
    end: datetime | None,
) -> Decimal:
    rows = UsageAll.objects.filter(userorgid=org, use_time__gte=start)
    if end is not None:
        rows = rows.filter(use_time__lt=end)
    scope = {"userid": userid, "token_name": token_name, "model_name": model_name, "feature": feature}
    rows = rows.filter(**{name: value for name, value in scope.items() if value})
    return rows.aggregate(spent=Sum("amount"))["spent"] or Decimal(0)
