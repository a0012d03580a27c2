"""Posting: every usage record into the accounting ledger exactly once, or into the failures table.

Workers claim `pending` records in batches with SELECT ... FOR UPDATE SKIP LOCKED (PostgreSQL): two
workers never take the same record and never wait on each other's records (on SQLite the plain select
runs inside a write transaction, and SQLite lets one writer at a time). The claim, the ledger
writes and the status change commit together, so a worker killed mid-batch leaves its records
`pending` for the next run: nothing posted twice, nothing lost.

A batch is posted set-based (`accounting.usage_posting.ledger_post_usage_batch`): each record passes or fails
on its own against the locked balances, and only an unexpected error sends the batch down the slow
path, one savepoint per record, where the record that raises is recorded as `internal`.
"""

import logging
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

from django.db import connection, transaction
from django.db.models import QuerySet
from django.utils import timezone

from accounting.budgets import budget_usage_apply
from accounting.failures import DESCRIBED_FIELDS, FailedPosting, failures_record, failures_resolve_posted
from accounting.holds import holds_settle
from accounting.models import AccountingFailure
from accounting.usage_posting import Outcome, PostingResult, UsagePosting, ledger_post_usage_batch
from llmlog.budget_spent import usage_change
from llmlog.jobs import job_run
from llmlog.models import TOKEN_COUNT_FIELDS, AccountingStatus, LLMUsage
from llmlog.pricing import apply_prices
from llmlog.rollups import usage_rollups_refresh

logger = logging.getLogger(__name__)

POSTING_JOB = "account_pending_usage"
RETRY_JOB = "retry_failed_accounting"
# One batch is one database transaction that holds the locks of the accounts it touches (the
# platform account is in every batch), so it stays short: 1000 records take about a tenth of a
# second, and a crash redoes at most that much.
DEFAULT_BATCH_SIZE = 1000
# The retry job reads failures in smaller batches: a batch of failures is usually one org's problem.
RETRY_BATCH_SIZE = 500

# What posting reads of a claimed record: what a failure row copies, and the currency it posts in.
CLAIM_FIELDS = ("id", *DESCRIBED_FIELDS, "currency")
# What pricing reads besides, for the rare record that arrives without a price.
PRICING_FIELDS = ("use_time", "status", *TOKEN_COUNT_FIELDS)
# What a repriced record's count in the budgets reads besides (its scope; the rest is claimed or above).
BUDGET_SCOPE_FIELDS = ("token_name", "feature")


# --- the pending queue ----------------------------------------------------------------------------


def account_pending_usage(
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    max_batches: int | None = None,
    max_seconds: float | None = None,
) -> dict[str, int]:
    """Post pending records, oldest first, batch after batch until none is left (or a bound is hit).

    Returns counts: claimed, accounted, already_accounted, skipped, failed, batches.
    """
    if batch_size < 1:
        raise ValueError("batch_size: must be at least 1")
    counts: Counter[str] = Counter()
    started = time.monotonic()
    with job_run(POSTING_JOB) as run:
        while max_batches is None or counts["batches"] < max_batches:
            if max_seconds is not None and time.monotonic() - started >= max_seconds:
                break
            with transaction.atomic():
                pending = LLMUsage.objects.filter(accounting_status=AccountingStatus.PENDING).order_by("id")
                claim = _claim(pending, batch_size)
                if not claim.rows:
                    break
                _post_rows(claim, counts, resolve_by=None)
            counts["batches"] += 1
            run.counts = _plain(counts)
        run.counts = _plain(counts)
    return run.counts


def pending_usage_exists() -> bool:
    """Cheap (the partial index `llmusage_pending_idx`): is there anything to post?"""
    return LLMUsage.objects.filter(accounting_status=AccountingStatus.PENDING).exists()


@dataclass
class Claim:
    """Rows locked by this transaction. `marked`: already set to accounted (the common outcome)."""

    rows: list[dict[str, Any]]
    now: datetime
    marked: bool


def _claim(queryset: QuerySet[LLMUsage], limit: int) -> Claim:
    """Lock up to `limit` rows of `queryset` for this transaction, skipping rows another worker holds.

    On PostgreSQL one statement claims the rows and marks them accounted (UPDATE ... WHERE id =
    ANY(ARRAY(SELECT ... FOR UPDATE SKIP LOCKED)) RETURNING): each row is written once instead of
    locked, then written. The records that do not post are set back in the same transaction
    (`_record_results`). ANY(ARRAY(...)) runs the claim once and then updates by primary key; with
    `id IN (SELECT ...)` the planner may hash-join the claim against a scan of the whole table.
    """
    now = timezone.now()
    locking = queryset.select_for_update(skip_locked=True)
    if connection.vendor != "postgresql":
        return Claim(rows=list(locking.values(*CLAIM_FIELDS)[:limit]), now=now, marked=False)
    subquery, params = locking.values("id")[:limit].query.sql_with_params()
    columns = ", ".join(
        connection.ops.quote_name(LLMUsage._meta.get_field(name).column) for name in CLAIM_FIELDS
    )
    sql = (
        f"UPDATE {LLMUsage._meta.db_table} SET accounting_status = %s, accounted_at = %s "
        f"WHERE id = ANY(ARRAY({subquery})) RETURNING {columns}"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [AccountingStatus.ACCOUNTED, now, *params])
        rows = [dict(zip(CLAIM_FIELDS, values, strict=True)) for values in cursor.fetchall()]
    rows.sort(key=lambda row: row["id"])  # oldest first: the order balances are checked in
    return Claim(rows=rows, now=now, marked=True)


def _post_rows(claim: Claim, counts: Counter[str], *, resolve_by: str | None) -> dict[UUID, str]:
    """Post claimed rows and record what became of each; returns usage id -> outcome.

    `resolve_by` (retries): who resolves the failure rows of the records that now post."""
    rows, now = claim.rows, claim.now
    _reprice([row for row in rows if row["amount"] is None or row["cost"] is None])
    postings = [
        UsagePosting(
            usage_id=row["id"],
            transno=row["transno"],
            userorgid=row["userorgid"],
            ownerid=row["ownerid"],
            amount=row["amount"],
            cost=row["cost"],
            currency=row["currency"],
        )
        for row in rows
    ]
    try:
        with transaction.atomic():
            # The rows are ours (locked) and pending or failed: the ledger's unique constraint is the
            # check that they are not posted yet, and the slow path below says which one was.
            results = ledger_post_usage_batch(usages=postings, now=now, check_posted=False)
    except Exception:
        logger.exception("posting a batch of %d records failed; posting them one by one", len(rows))
        results = [_post_one(posting, now) for posting in postings]
    return _record_results(claim, results, counts, resolve_by=resolve_by)


def _post_one(posting: UsagePosting, now: datetime) -> PostingResult:
    try:
        with transaction.atomic():
            (result,) = ledger_post_usage_batch(usages=[posting], now=now)
        return result
    except Exception as exc:
        logger.exception("posting usage %s failed", posting.usage_id)
        return PostingResult(
            posting.usage_id,
            Outcome.FAILED,
            error_code=AccountingFailure.ErrorCode.INTERNAL,
            message=f"{type(exc).__name__}: {exc}",
        )


def _record_results(
    claim: Claim, results: list[PostingResult], counts: Counter[str], *, resolve_by: str | None
) -> dict[UUID, str]:
    rows, now = claim.rows, claim.now
    accounted, skipped, failures = [], [], []
    outcomes: dict[UUID, str] = {}
    for row, result in zip(rows, results, strict=True):
        if result.outcome in (Outcome.POSTED, Outcome.ALREADY_POSTED):
            accounted.append(row["id"])
            outcome = "accounted" if result.outcome == Outcome.POSTED else "already_accounted"
        elif result.outcome == Outcome.SKIPPED:
            skipped.append(row["id"])
            outcome = "skipped"
        else:
            failures.append(_failed_posting(row, result))
            outcome = "failed"
        outcomes[row["id"]] = outcome
        counts[outcome] += 1
    counts["claimed"] += len(rows)
    if accounted and not claim.marked:
        LLMUsage.objects.filter(pk__in=accounted).update(
            accounting_status=AccountingStatus.ACCOUNTED, accounted_at=now
        )
    if skipped:
        LLMUsage.objects.filter(pk__in=skipped).update(
            accounting_status=AccountingStatus.SKIPPED, accounted_at=None
        )
    if failures:
        LLMUsage.objects.filter(pk__in=[f.usage_id for f in failures]).update(
            accounting_status=AccountingStatus.FAILED, accounted_at=None
        )
        failures_record(failures=failures, now=now)
    if resolve_by is not None and (accounted or skipped):
        failures_resolve_posted(usage_ids=[*accounted, *skipped], by=resolve_by, now=now)
    # Whatever became of them, the calls' holds end here: an accounted record's money is in the balance
    # now, a skipped one has none, a failed one waits in the failures table (a retried record's hold
    # ended at its first failure; settling it again changes nothing).
    holds_settle(keys=[(row["userorgid"], row["transno"]) for row in rows], now=now)
    return outcomes


def _failed_posting(row: dict[str, Any], result: PostingResult) -> FailedPosting:
    return FailedPosting(
        usage_id=row["id"],
        transno=row["transno"],
        use_date=row["use_date"],
        error_code=result.error_code,
        error_message=result.message,
        userid=row["userid"],
        userorgid=row["userorgid"],
        ownerid=row["ownerid"],
        llmid=row["llmid"],
        model_name=row["model_name"],
        amount=row["amount"],
        cost=row["cost"],
    )


def _reprice(rows: list[dict[str, Any]]) -> None:
    """A record stored without a price is priced again: the operator may have added the price since.
    Its owner comes from the same book (apply_prices fills an empty ownerid), so the cost is posted
    to the org the price names."""
    if not rows:
        return
    extra = {
        row["id"]: row
        for row in LLMUsage.objects.filter(pk__in=[r["id"] for r in rows]).values(
            "id", *PRICING_FIELDS, *BUDGET_SCOPE_FIELDS
        )
    }
    for row in rows:
        row.update(extra[row["id"]])
    unpriced = {row["id"] for row in rows if row["amount"] is None}
    apply_prices(rows)
    counted, priced_at = [], []
    for row in rows:
        if row["amount"] is not None and row["cost"] is not None:
            LLMUsage.objects.filter(pk=row["id"]).update(
                amount=row["amount"], cost=row["cost"], price=row["price"], ownerid=row["ownerid"]
            )
            priced_at.append(row["use_time"])
            if row["id"] in unpriced:
                counted.append(usage_change(row))
    # Its hour's rollups summed it without a price: marked stale here, rebuilt after the commit.
    usage_rollups_refresh(use_times=priced_at)
    # It counted 0 in the budgets at ingest (it had no amount): its amount counts from now.
    budget_usage_apply(changes=counted)


def _plain(counts: Counter[str]) -> dict[str, int]:
    keys = ("claimed", "accounted", "already_accounted", "skipped", "failed", "batches")
    return {key: counts[key] for key in keys}


# --- retries --------------------------------------------------------------------------------------


@dataclass
class RetryResult:
    """counts for the job run; outcomes per failure id: accounted, skipped, failed, already_accounted
    (the record was posted already: a no-op), busy (another worker holds it, or it is pending again),
    missing (the usage record is gone)."""

    counts: dict[str, int] = field(default_factory=dict)
    outcomes: dict[int, str] = field(default_factory=dict)


def retry_failed_accounting(
    *,
    ids: Iterable[int] | None = None,
    force: bool = False,
    batch_size: int = RETRY_BATCH_SIZE,
    max_seconds: float | None = None,
    now: datetime | None = None,
    by: str = "retry",
) -> RetryResult:
    """Post failed records again.

    `ids` (failure ids): those failures now, whatever their status or backoff (an operator asked).
    Without ids: every open failure whose backoff has passed (`next_retry_at`), or every open failure
    with `force`. A record that posts is marked accounted and its failure row resolved; one that
    fails again gets attempts + 1 and a later `next_retry_at`; an already accounted record is left
    exactly as it is.
    """
    if batch_size < 1:
        raise ValueError("batch_size: must be at least 1")
    now = now or timezone.now()
    failures = AccountingFailure.objects.all()
    if ids is not None:
        failures = failures.filter(pk__in=list(ids))
    else:
        failures = failures.filter(status=AccountingFailure.Status.OPEN)
        if not force:
            failures = failures.filter(next_retry_at__lte=now)
    if ids is not None:  # an operator's retry, not the periodic job: no JobRun
        return _retry(failures, batch_size=batch_size, max_seconds=max_seconds, by=by)
    with job_run(RETRY_JOB) as run:
        result = _retry(failures, batch_size=batch_size, max_seconds=max_seconds, by=by)
        run.counts = result.counts
    return result


def _retry(
    failures: QuerySet[AccountingFailure], *, batch_size: int, max_seconds: float | None, by: str
) -> RetryResult:
    result = RetryResult()
    counts: Counter[str] = Counter()
    started = time.monotonic()
    last_pk = 0
    while max_seconds is None or time.monotonic() - started < max_seconds:
        batch = list(
            failures.filter(pk__gt=last_pk).order_by("pk").values_list("pk", "usage_id")[:batch_size]
        )
        if not batch:
            break
        last_pk = batch[-1][0]
        with transaction.atomic():
            by_usage = _retry_batch(dict(batch), counts, by=by)
        result.outcomes.update({pk: by_usage[usage_id] for pk, usage_id in batch})
        counts["batches"] += 1
    keys = ("retried", "accounted", "already_accounted", "skipped", "failed", "busy", "missing", "batches")
    result.counts = {key: counts[key] for key in keys}
    return result


def _retry_batch(failures: dict[int, UUID], counts: Counter[str], *, by: str) -> dict[UUID, str]:
    usage_ids = list(failures.values())
    failed = LLMUsage.objects.filter(pk__in=usage_ids, accounting_status=AccountingStatus.FAILED).order_by(
        "id"
    )
    claim = _claim(failed, len(usage_ids))
    outcomes: dict[UUID, str] = {}
    if claim.rows:
        post_counts: Counter[str] = Counter()
        outcomes.update(_post_rows(claim, post_counts, resolve_by=by))
        counts.update(post_counts)
        counts["retried"] += len(claim.rows)
    others = [usage_id for usage_id in usage_ids if usage_id not in outcomes]
    statuses = dict(LLMUsage.objects.filter(pk__in=others).values_list("id", "accounting_status"))
    posted = []
    for usage_id in others:
        status = statuses.get(usage_id)
        if status in (AccountingStatus.ACCOUNTED, AccountingStatus.SKIPPED):
            outcomes[usage_id] = "already_accounted"
            posted.append(usage_id)
        elif status is None:
            outcomes[usage_id] = "missing"
        else:
            outcomes[usage_id] = "busy"
        counts[outcomes[usage_id]] += 1
    if posted:
        # Nothing is posted again; a failure row left open by an earlier crash is closed.
        failures_resolve_posted(usage_ids=posted, by=by)
    return outcomes
