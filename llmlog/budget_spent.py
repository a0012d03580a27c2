"""llmlog's side of budgets: what the usage rows count in them, as plain values for accounting.budgets.

- `spent_in_period` sums a scope's rows over a period (hot and history alike). accounting.budgets calls
  it through LLMLOG_BUDGET_SPENT_SCANNER to seed a new budget's counter (it never imports llmlog): a
  scan once per budget, never per hold.
- `usage_change` turns a usage row (a prepared ingest row, a claimed row, a model instance) into the
  `UsageChange` the counters take; ingest, edits and posting's late pricing pass them to
  `budget_usage_apply` in the transaction that changes the rows.
- `budgets_count_ingested` is ingest's one call after its write: the new rows count, and a row filed as
  skipped settles its hold (it will never be posted).

Every record counts, whatever its accounting status; a record not priced yet counts 0 until posting
prices it.
"""

from collections.abc import Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

from django.db.models import Model, Sum

from accounting.budgets import UsageChange, budget_usage_apply
from accounting.holds import holds_settle
from llmlog.models import AccountingStatus, UsageAll


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


# What a record's count in the budgets depends on: its scope, its period (use_time) and its amount.
COUNTED_FIELDS = ("userorgid", "userid", "token_name", "model_name", "feature", "use_time", "amount")


def usage_change(record: Mapping[str, Any] | Model, *, sign: int = 1) -> UsageChange:
    """The record's count (+amount, or -amount with sign=-1); an unpriced record counts 0."""
    get = record.get if isinstance(record, Mapping) else record.__dict__.get
    amount = get("amount") or Decimal(0)
    return UsageChange(
        userorgid=get("userorgid"),
        userid=get("userid") or "",
        token_name=get("token_name") or "",
        model_name=get("model_name") or "",
        feature=get("feature") or "",
        use_time=get("use_time"),
        amount=amount if sign > 0 else -amount,
    )


def budgets_count_ingested(*, rows: Sequence[Mapping[str, Any]]) -> None:
    """Ingest's call, in the transaction that wrote `rows` (the records created, never a duplicate):
    each counts in the budgets of its scope, and a record filed as skipped settles its hold now, since
    posting will never see it. Records of amount 0 cost no statement (budget_usage_apply drops them)."""
    budget_usage_apply(changes=[usage_change(row) for row in rows])
    skipped = [
        (row["userorgid"], row["transno"])
        for row in rows
        if row["accounting_status"] == AccountingStatus.SKIPPED
    ]
    holds_settle(keys=skipped)
