"""Failed postings (`llmusage_accounting_failed`): recorded, searched, resolved or ignored by operators.

One row per usage record. A posting that fails again updates the row (attempts + 1, last error) and
reopens it; a retry that succeeds resolves it. `next_retry_at` is the backoff of the scheduled retry:
2^attempts minutes after the last failure, at most 6 hours.
"""

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID

from django.db import transaction
from django.db.models import F, QuerySet
from django.utils import timezone

from accounting.models import AccountingFailure

MAX_RETRY_DELAY = timedelta(hours=6)
# Enough of an error message to diagnose it; a stack-trace-sized message is cut.
MAX_MESSAGE_LENGTH = 2000


def retry_delay(attempts: int) -> timedelta:
    """How long the scheduled retry waits after the `attempts`-th failure: 2, 4, 8 … minutes, then 6 h."""
    if attempts >= 9:  # 2^9 minutes is past the cap
        return MAX_RETRY_DELAY
    return min(timedelta(minutes=2**attempts), MAX_RETRY_DELAY)


@dataclass(frozen=True)
class FailedPosting:
    """A usage record that failed to post, as plain values (accounting never reads llmlog's models)."""

    usage_id: UUID
    transno: str
    use_date: date
    error_code: str
    error_message: str
    userid: str = ""
    userorgid: str = ""
    ownerid: str = ""
    llmid: str = ""
    model_name: str = ""
    amount: Decimal | None = None
    cost: Decimal | None = None


@transaction.atomic
def failures_record(*, failures: Sequence[FailedPosting], now: datetime | None = None) -> None:
    """Create the failure row of each record, or update it: attempts + 1, last error, reopened.

    Callers hold the usage rows locked, so no two callers record the same record at once.
    """
    if not failures:
        return
    now = now or timezone.now()
    existing = dict(
        AccountingFailure.objects.filter(usage_id__in=[f.usage_id for f in failures]).values_list(
            "usage_id", "attempts"
        )
    )
    new_rows = []
    for failure in failures:
        common = {
            "transno": failure.transno,
            "userid": failure.userid,
            "userorgid": failure.userorgid,
            "ownerid": failure.ownerid,
            "llmid": failure.llmid,
            "model_name": failure.model_name,
            "amount": failure.amount,
            "cost": failure.cost,
            "use_date": failure.use_date,
            "error_code": failure.error_code,
            "error_message": failure.error_message[:MAX_MESSAGE_LENGTH],
            "last_failed_at": now,
            "status": AccountingFailure.Status.OPEN,
            "resolved_at": None,
            "resolved_by": "",
        }
        if failure.usage_id in existing:
            attempts = existing[failure.usage_id] + 1
            AccountingFailure.objects.filter(usage_id=failure.usage_id).update(
                **common, attempts=F("attempts") + 1, next_retry_at=now + retry_delay(attempts)
            )
        else:
            new_rows.append(
                AccountingFailure(
                    **common,
                    usage_id=failure.usage_id,
                    attempts=1,
                    first_failed_at=now,
                    next_retry_at=now + retry_delay(1),
                )
            )
    AccountingFailure.objects.bulk_create(new_rows, batch_size=500)


def failure_record(
    *,
    usage_id: UUID,
    transno: str,
    use_date: date,
    error_code: str,
    error_message: str,
    userid: str = "",
    userorgid: str = "",
    ownerid: str = "",
    llmid: str = "",
    model_name: str = "",
    amount: Decimal | None = None,
    cost: Decimal | None = None,
    now: datetime | None = None,
) -> AccountingFailure:
    """Record one failed posting (see failures_record); returns its row."""
    failures_record(
        failures=[
            FailedPosting(
                usage_id=usage_id,
                transno=transno,
                use_date=use_date,
                error_code=error_code,
                error_message=error_message,
                userid=userid,
                userorgid=userorgid,
                ownerid=ownerid,
                llmid=llmid,
                model_name=model_name,
                amount=amount,
                cost=cost,
            )
        ],
        now=now,
    )
    return AccountingFailure.objects.get(usage_id=usage_id)


# What a failure row copies of its record: what the failures page shows, and finds it by.
DESCRIBED_FIELDS = (
    "transno",
    "userid",
    "userorgid",
    "ownerid",
    "llmid",
    "model_name",
    "amount",
    "cost",
    "use_date",
)


def failures_redescribe(*, records: Iterable[Mapping[str, Any]]) -> int:
    """Records changed after they failed (an operator's edit, an in-place re-pricing): their open failure
    rows copy DESCRIBED_FIELDS from them again, so the page shows the amount the record now owes and finds
    it by what it now says. `records`: mappings with `id` (the usage id) and DESCRIBED_FIELDS. A resolved
    or ignored row keeps what it said when an operator decided about it. Returns the rows updated."""
    by_id = {record["id"]: record for record in records}
    rows = list(
        AccountingFailure.objects.filter(usage_id__in=list(by_id), status=AccountingFailure.Status.OPEN)
    )
    for row in rows:
        for name in DESCRIBED_FIELDS:
            setattr(row, name, by_id[row.usage_id][name])
    AccountingFailure.objects.bulk_update(rows, DESCRIBED_FIELDS, batch_size=500)
    return len(rows)


def failures_resolve_posted(*, usage_ids: Iterable[UUID], by: str, now: datetime | None = None) -> int:
    """The records were posted after all (a retry succeeded): resolve their failure rows."""
    return (
        AccountingFailure.objects.filter(usage_id__in=list(usage_ids))
        .exclude(status=AccountingFailure.Status.RESOLVED)
        .update(
            status=AccountingFailure.Status.RESOLVED, resolved_at=now or timezone.now(), resolved_by=by[:150]
        )
    )


def failure_close_for_usage(*, usage_id: UUID, reason: str, by: str, now: datetime | None = None) -> int:
    """The usage record no longer owes anything (an operator deleted it, or corrected it to zero): its
    open failure row is resolved, `resolved_by` saying who and why. Returns how many rows closed (0 or 1).
    An ignored or resolved row stays as it is: an operator already decided about it."""
    return AccountingFailure.objects.filter(usage_id=usage_id, status=AccountingFailure.Status.OPEN).update(
        status=AccountingFailure.Status.RESOLVED,
        resolved_at=now or timezone.now(),
        resolved_by=f"{by}: {reason}"[:150],
    )


class FailureStateError(ValueError):
    """The operator's action does not apply to the failure's current status."""


def failure_resolve(*, failure: AccountingFailure, by: str, now: datetime | None = None) -> AccountingFailure:
    """An operator settled it outside the ledger. Resolving a resolved failure changes nothing."""
    if failure.status == AccountingFailure.Status.RESOLVED:
        return failure
    return _close(failure, AccountingFailure.Status.RESOLVED, by, now)


def failure_ignore(*, failure: AccountingFailure, by: str, now: datetime | None = None) -> AccountingFailure:
    """An operator decided it will not be posted: the scheduled retry leaves it alone from now on."""
    if failure.status == AccountingFailure.Status.IGNORED:
        return failure
    if failure.status == AccountingFailure.Status.RESOLVED:
        raise FailureStateError(f"Failure {failure.pk} is already resolved.")
    return _close(failure, AccountingFailure.Status.IGNORED, by, now)


def _close(failure: AccountingFailure, status: str, by: str, now: datetime | None) -> AccountingFailure:
    failure.status = status
    failure.resolved_at = now or timezone.now()
    failure.resolved_by = by[:150]
    failure.save(update_fields=["status", "resolved_at", "resolved_by"])
    return failure


def get_failed_accounting_records(
    *,
    start_date: date | None = None,
    end_date: date | None = None,
    userorgid: str | None = None,
    userid: str | None = None,
    llmid: str | None = None,
    model_name: str | None = None,
    error_code: str | None = None,
    status: str | None = None,
    transno: str | None = None,
) -> QuerySet[AccountingFailure]:
    """Failed postings matching every filter given (None: any), newest failure first.

    The dates bound the record's `use_date`, both inclusive (llmage's get_failed_accounting_records).
    """
    queryset = AccountingFailure.objects.all()
    if start_date is not None:
        queryset = queryset.filter(use_date__gte=start_date)
    if end_date is not None:
        queryset = queryset.filter(use_date__lte=end_date)
    exact = {
        "userorgid": userorgid,
        "userid": userid,
        "llmid": llmid,
        "model_name": model_name,
        "error_code": error_code,
        "status": status,
        "transno": transno,
    }
    queryset = queryset.filter(**{name: value for name, value in exact.items() if value is not None})
    return queryset.order_by("-last_failed_at", "-id")
