"""Corrections by an operator: change or delete a usage record that is not accounted yet.

An accounted record is part of the ledger and never changes; a record in history was accounted (or
skipped) before it moved, and history is read-only. Both are refused with UsageImmutable (a 409).
"""

import uuid
from decimal import Decimal
from typing import Any

from django.db import transaction

from llmlog.models import AccountingStatus, LLMUsage, UsageAll
from llmlog.rollups import usage_rollups_refresh


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


@transaction.atomic
def usage_update(*, org: str = "", id: str | uuid.UUID, changes: dict[str, Any]) -> LLMUsage:
    """Apply validated `changes` to a record not yet accounted; returns it. A skipped record that now
    has something to bill goes back to pending, so that it gets posted. Hourly rollups of its hour are
    rebuilt."""
    usage = _locked_usage(org=org, id=id)
    for name, value in changes.items():
        setattr(usage, name, value)
    fields = set(changes)
    billable = (usage.amount or Decimal(0)) > 0 or (usage.cost or Decimal(0)) > 0
    if usage.accounting_status == AccountingStatus.SKIPPED and billable:
        usage.accounting_status = AccountingStatus.PENDING
        fields.add("accounting_status")
    usage.save(update_fields=sorted(fields))
    usage_rollups_refresh(use_times=[usage.use_time])
    return usage


@transaction.atomic
def usage_delete(*, org: str = "", id: str | uuid.UUID) -> None:
    """Delete a record not yet accounted (a test call, a duplicate under another transno); its hour's
    rollups are rebuilt."""
    usage = _locked_usage(org=org, id=id)
    use_time = usage.use_time
    usage.delete()
    usage_rollups_refresh(use_times=[use_time])
