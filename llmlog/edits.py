"""Corrections by an operator: change or delete a usage record that is not accounted yet.

An accounted record is part of the ledger and never changes; a record in history was accounted (or
skipped) before it moved, and history is read-only. Both are refused with UsageImmutable (a 409).

Every edit and delete writes a `UsageAudit` row (who, when, the changed fields before and after) in its
own transaction: a change without its audit row cannot exist. The budgets' counters move in it too
(the old count out, the new in; a deleted record's amount out), so spent stays equal to the rows.
Who may call these is the caller's question (the API allows a platform admin only, the admin its
Django permissions); the services record the `actor` they are given.
"""

import uuid
from collections.abc import Iterable
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from django.db import transaction

from accounting.budgets import budget_usage_apply
from accounting.failures import DESCRIBED_FIELDS, failure_close_for_usage, failures_redescribe
from llmlog.budget_spent import COUNTED_FIELDS, usage_change
from llmlog.models import AccountingStatus, LLMUsage, UsageAll, UsageAudit
from llmlog.rollups import usage_rollups_refresh

# Why a failure row closes when its record stops owing anything.
DELETED_REASON = "usage record deleted"
ZEROED_REASON = "usage record corrected to amount 0 and cost 0"


class UsageImmutable(Exception):
    """The record may not change: accounted, or already moved to history."""


def _locked_usage(*, org: str, id: str | uuid.UUID) -> LLMUsage:
    """The hot record, row-locked: the posting worker and this edit never interleave (a record being
    posted is seen accounted once its posting commits). Raises LLMUsage.DoesNotExist, or
    UsageImmutable when the record is in history."""
    queryset = LLMUsage.objects.select_for_update()
    if org:
        queryset = queryset.filter(userorgid=org)
    try:
        usage = queryset.get(pk=id)
    except LLMUsage.DoesNotExist:
        history = UsageAll.objects.filter(pk=id, source="history")
        if org:
            history = history.filter(userorgid=org)
        if history.exists():
            raise UsageImmutable("This record was moved to history; history is read-only.") from None
        raise
    if usage.accounting_status == AccountingStatus.ACCOUNTED:
        raise UsageImmutable("This record is accounted; an accounted record is immutable.")
    return usage


def json_safe(value: Any) -> Any:
    """A field's value as the audit's JSON keeps it: Decimals and times as strings, the exact digits."""
    if isinstance(value, Decimal | uuid.UUID):
        return str(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, dict):
        return {str(key): json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(item) for item in value]
    return value


def _values(usage: LLMUsage, names: Iterable[str]) -> dict[str, Any]:
    return {name: json_safe(getattr(usage, name)) for name in sorted(names)}


def _audit(*, usage: LLMUsage, action: str, actor: str, before: dict, after: dict | None) -> None:
    UsageAudit.objects.create(
        usage_id=usage.pk,
        transno=usage.transno,
        userorgid=usage.userorgid,
        action=action,
        actor=actor[:150],
        before=before,
        after=after,
    )


@transaction.atomic
def usage_update(*, org: str = "", id: str | uuid.UUID, changes: dict[str, Any], actor: str) -> LLMUsage:
    """Apply validated `changes` to a record not yet accounted; returns it. The fields that change are
    audited (before and after). A skipped record that now has something to bill goes back to pending,
    so that it gets posted; a record corrected to nothing to bill is skipped, and its open failure row
    closes. Hourly rollups of its hour are rebuilt."""
    usage = _locked_usage(org=org, id=id)
    changed = {name for name, value in changes.items() if getattr(usage, name) != value}
    if not changed:
        return usage
    before, status_before = _values(usage, changed), usage.accounting_status
    # Its count in the budgets moves when what it counts for (scope, period, amount) does: the old count
    # out, the new in; both may name other budgets or periods.
    uncounted = usage_change(usage, sign=-1) if changed & set(COUNTED_FIELDS) else None
    use_time_before = usage.use_time  # an edit of use_time moves the record out of its hour too
    for name in changed:
        setattr(usage, name, changes[name])
    fields = set(changed)
    billable = (usage.amount or Decimal(0)) > 0 or (usage.cost or Decimal(0)) > 0
    zeroed = not billable and changed & {"amount", "cost"}
    if usage.accounting_status == AccountingStatus.SKIPPED and billable:
        usage.accounting_status = AccountingStatus.PENDING
        fields.add("accounting_status")
    elif zeroed and usage.accounting_status != AccountingStatus.SKIPPED:
        # Nothing left to post: as ingest files a record with nothing to bill. The nightly move then
        # takes it, and the retry job stops trying to post it.
        usage.accounting_status = AccountingStatus.SKIPPED
        fields.add("accounting_status")
    if "accounting_status" in fields:
        before["accounting_status"] = json_safe(status_before)
    usage.save(update_fields=sorted(fields))
    if uncounted is not None:
        budget_usage_apply(changes=[uncounted, usage_change(usage)])
    _audit(
        usage=usage, action=UsageAudit.Action.UPDATE, actor=actor, before=before, after=_values(usage, fields)
    )
    if zeroed:
        failure_close_for_usage(usage_id=usage.pk, reason=ZEROED_REASON, by=actor)
    elif usage.accounting_status == AccountingStatus.FAILED:
        failures_redescribe(
            records=[{"id": usage.pk, **{name: getattr(usage, name) for name in DESCRIBED_FIELDS}}]
        )
    usage_rollups_refresh(use_times=[use_time_before, usage.use_time])
    return usage


@transaction.atomic
def usage_delete(*, org: str = "", id: str | uuid.UUID, actor: str) -> None:
    """Delete a record not yet accounted (a test call, a duplicate under another transno). The audit row
    keeps the whole record; its open failure row closes; its hour's rollups are rebuilt."""
    usage = _locked_usage(org=org, id=id)
    before = _values(usage, (field.attname for field in LLMUsage._meta.concrete_fields))
    _audit(usage=usage, action=UsageAudit.Action.DELETE, actor=actor, before=before, after=None)
    usage_id, use_time = usage.pk, usage.use_time
    usage.delete()
    # A deleted record was never consumed (a test call, a duplicate): it leaves the budgets. Unlike the
    # retention purge and new-api's delete of accounted history (llmlog.retention), which refund nothing.
    budget_usage_apply(changes=[usage_change(usage, sign=-1)])
    failure_close_for_usage(usage_id=usage_id, reason=DELETED_REASON, by=actor)
    usage_rollups_refresh(use_times=[use_time])
