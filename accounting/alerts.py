"""Budget alerts: one per budget, period and threshold, delivered as a signed webhook with retries.

`send_budget_alerts` (every minute, Celery and a management command) does three things:
1. finds crossings: every budget's counter of the current period, and of the one just ended (a crossing
   in its last minute still alerts), against its thresholds; a crossing is a `BudgetAlert` row, and
   the unique constraint on (budget, period, threshold) is what makes it one, whatever runs overlap;
2. delivers the alerts that are due: a POST of the JSON event to the budget's webhook with
   `X-Llmlog-Signature: sha256=<hex HMAC-SHA256 of the body with the webhook secret>`; a non-2xx
   answer or a network error is retried later (30 s, doubling, at most an hour apart), up to
   LLMLOG_BUDGET_WEBHOOK_ATTEMPTS tries; each try is recorded on the row (status, attempts, last error)
   for the admin. A budget without a webhook records its alerts as `no_webhook`;
3. marks expired holds (they stopped counting at their expiry already).

An alert is claimed with SELECT ... FOR UPDATE SKIP LOCKED and its row stays locked while its POST is
in flight: two runs never send the same alert at once.
"""

import hashlib
import hmac
import json
import logging
import urllib.error
import urllib.request
from collections import Counter
from datetime import datetime, timedelta
from decimal import Decimal

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from accounting.budgets import budget_statuses, period_bounds
from accounting.holds import holds_expire
from accounting.models import Budget, BudgetAlert, BudgetSpend

logger = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Llmlog-Signature"
FIRST_RETRY = timedelta(seconds=30)
MAX_RETRY = timedelta(hours=1)
# Alerts delivered per run: a run fits its minute even when every webhook times out (5 s each would
# take 100 alerts past it); the rest wait for the next run.
DELIVERIES_PER_RUN = 10


def send_budget_alerts(*, now: datetime | None = None) -> dict[str, int]:
    """Find crossings, deliver what is due, expire holds. Returns counts for the log."""
    now = now or timezone.now()
    counts: Counter[str] = Counter()
    counts["crossed"] = budget_alerts_find(now=now)
    counts.update(budget_alerts_deliver(now=now))
    counts["holds_expired"] = holds_expire(now=now)
    return dict(counts)


def budget_alerts_find(*, now: datetime) -> int:
    """Record every threshold crossed and not yet alerted; returns how many are new."""
    budgets = list(Budget.objects.all())
    if not budgets:
        return 0
    new = []
    for status in budget_statuses(budgets=budgets, now=now):
        new += _crossings(status.budget, status.period_start, status.period_end, status.spent, now)
    # The period just ended: its counter may have crossed after the last run looked.
    previous = {}
    for budget in budgets:
        if budget.period == Budget.Period.TOTAL:
            continue
        start, _ = period_bounds(period=budget.period, time_zone=budget.time_zone, at=now)
        previous[budget.pk] = period_bounds(
            period=budget.period, time_zone=budget.time_zone, at=start - timedelta(microseconds=1)
        )
    spent_before = {
        (budget_id, start): spent
        for budget_id, start, spent in BudgetSpend.objects.filter(budget_id__in=list(previous)).values_list(
            "budget_id", "period_start", "spent"
        )
    }
    for budget in budgets:
        if budget.pk in previous:
            start, end = previous[budget.pk]
            spent = spent_before.get((budget.pk, start))
            if spent:
                new += _crossings(budget, start, end, spent, now)
    if not new:
        return 0
    existing = set(
        BudgetAlert.objects.filter(budget_id__in={a.budget_id for a in new}).values_list(
            "budget_id", "period_start", "threshold"
        )
    )
    fresh = [a for a in new if (a.budget_id, a.period_start, a.threshold) not in existing]
    # ignore_conflicts: a run overlapping this one may insert the same crossing first.
    BudgetAlert.objects.bulk_create(fresh, ignore_conflicts=True)
    return len(fresh)


def _crossings(
    budget: Budget, start: datetime, end: datetime | None, spent: Decimal, now: datetime
) -> list[BudgetAlert]:
    return [
        BudgetAlert(
            budget=budget,
            period_start=start,
            period_end=end,
            threshold=threshold,
            spent=spent,
            limit=budget.limit,
            status=BudgetAlert.Status.PENDING if budget.webhook_url else BudgetAlert.Status.NO_WEBHOOK,
            next_attempt_at=now,
            created_at=now,
        )
        for threshold in budget.thresholds
        if spent * 100 >= budget.limit * threshold
    ]


def budget_alerts_deliver(*, now: datetime, limit: int = DELIVERIES_PER_RUN) -> Counter[str]:
    """Send the pending alerts whose time has come, one transaction each."""
    counts: Counter[str] = Counter()
    for _ in range(limit):
        with transaction.atomic():
            alert = (
                BudgetAlert.objects.select_for_update(skip_locked=True, of=("self",))
                .select_related("budget")
                .filter(status=BudgetAlert.Status.PENDING, next_attempt_at__lte=now)
                .order_by("next_attempt_at", "id")
                .first()
            )
            if alert is None:
                break
            counts[_deliver(alert, now)] += 1
    return counts


def alert_body(alert: BudgetAlert) -> bytes:
    """The event, as the bytes that are signed and sent."""
    budget = alert.budget
    event = {
        "id": str(alert.pk),
        "type": "budget.threshold_crossed",
        "budget": budget.pk,
        "name": budget.name,
        "org": budget.org,
        "scope": {name: getattr(budget, name) for name in Budget.SCOPE_FIELDS if getattr(budget, name)},
        "period": budget.period,
        "time_zone": budget.time_zone,
        "period_start": alert.period_start.isoformat(),
        "period_end": alert.period_end.isoformat() if alert.period_end else None,
        "threshold": alert.threshold,
        "spent": str(alert.spent),
        "limit": str(alert.limit),
        "currency": budget.currency,
        "action": budget.action,
        "created_at": alert.created_at.isoformat(),
    }
    return json.dumps(event, separators=(",", ":"), sort_keys=True).encode()


def signature(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def _deliver(alert: BudgetAlert, now: datetime) -> str:
    budget = alert.budget
    body = alert_body(alert)
    headers = {"Content-Type": "application/json", "User-Agent": "llmlog-budget-alerts"}
    if budget.webhook_secret:
        headers[SIGNATURE_HEADER] = signature(budget.webhook_secret, body)
    request = urllib.request.Request(budget.webhook_url, data=body, headers=headers, method="POST")
    alert.attempts += 1
    try:
        with urllib.request.urlopen(request, timeout=settings.LLMLOG_BUDGET_WEBHOOK_TIMEOUT) as response:
            alert.last_status_code = response.status
        error = ""
    except urllib.error.HTTPError as exc:
        alert.last_status_code = exc.code
        error = f"HTTP {exc.code}: {exc.read(500).decode(errors='replace')}"
    except (urllib.error.URLError, OSError, ValueError) as exc:
        alert.last_status_code = None
        error = f"{type(exc).__name__}: {exc}"
    if not error:
        alert.status, alert.delivered_at, alert.last_error = BudgetAlert.Status.DELIVERED, now, ""
        outcome = "delivered"
    elif alert.attempts >= settings.LLMLOG_BUDGET_WEBHOOK_ATTEMPTS:
        alert.status, alert.last_error = BudgetAlert.Status.FAILED, error
        outcome = "failed"
        logger.warning("budget alert %s gave up after %d attempts: %s", alert.pk, alert.attempts, error)
    else:
        alert.last_error = error
        alert.next_attempt_at = now + min(FIRST_RETRY * 2 ** (alert.attempts - 1), MAX_RETRY)
        outcome = "retrying"
    alert.save(
        update_fields=[
            "status",
            "attempts",
            "last_status_code",
            "last_error",
            "next_attempt_at",
            "delivered_at",
        ]
    )
    return outcome
