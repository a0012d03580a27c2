"""Budgets, their spent counters and alerts, and holds: the limits an org sets on its spending, and the
money reserved for a call before it is made (accounting.budgets, accounting.holds, accounting.alerts).
"""

from decimal import Decimal

from django.db import models
from django.db.models import Q
from django.utils import timezone
from uuid_utils.compat import uuid7

from accounting.models.accounts import default_time_zone
from core.money import MONEY_PLACES, money_field

# A spent counter sums many records' amounts: wider than one record's money column, as the rollups are.
SPENT_DIGITS = 28


def default_thresholds() -> list[int]:
    return [50, 80, 100]


class Budget(models.Model):
    """A limit on what an org (or a user, key, model or feature of it) spends per period.

    An empty scope field means "any": a budget with only `org` counts every record of the org. The
    scope, period and time zone are fixed once created (its spent counters are kept for them); limit,
    thresholds, action and webhook may change."""

    class Period(models.TextChoices):
        DAY = "day"
        WEEK = "week"  # ISO weeks: Monday 00:00 in the budget's time zone
        MONTH = "month"
        TOTAL = "total"  # never resets: a key's quota (new-api's token quota)

    class Action(models.TextChoices):
        ALERT = "alert", "alert only"
        BLOCK = "block", "block new holds at 100%"

    SCOPE_FIELDS = ("userid", "token_name", "model_name", "feature")
    # What a budget's creator chooses (budget_create's parameters, with webhook_secret besides), in the
    # order the admin's form and the API's answer list them; of these, only
    # accounting.budgets.UPDATABLE_FIELDS may change once the budget exists.
    CHOSEN_FIELDS = (
        "org",
        "name",
        *SCOPE_FIELDS,
        "period",
        "time_zone",
        "limit",
        "currency",
        "thresholds",
        "action",
        "webhook_url",
    )

    org = models.CharField(max_length=64, help_text="The org (userorgid) whose usage this budget counts.")
    name = models.CharField(max_length=150, blank=True, default="")
    userid = models.CharField(max_length=64, blank=True, default="", help_text="Only this user; empty: any.")
    token_name = models.CharField(
        max_length=150, blank=True, default="", help_text="Only this key; empty: any."
    )
    model_name = models.CharField(
        max_length=150, blank=True, default="", help_text="Only this model; empty: any."
    )
    feature = models.CharField(
        max_length=64, blank=True, default="", help_text="Only this feature; empty: any."
    )
    period = models.CharField(max_length=8, choices=Period.choices, default=Period.MONTH)
    time_zone = models.CharField(max_length=64, default=default_time_zone)
    limit = money_field()
    currency = models.CharField(max_length=3, default="USD")
    thresholds = models.JSONField(default=default_thresholds, help_text="Percents of the limit that alert.")
    action = models.CharField(max_length=8, choices=Action.choices, default=Action.ALERT)
    webhook_url = models.URLField(max_length=500, blank=True, default="")
    webhook_secret = models.CharField(max_length=200, blank=True, default="")
    created_by = models.CharField(max_length=150, blank=True, default="")
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        db_table = "accounting_budget"
        ordering = ["org", "id"]
        constraints = [
            models.CheckConstraint(condition=Q(limit__gt=0), name="budget_limit_positive"),
        ]
        indexes = [
            # Ingest and hold admission read an org's budgets on every call.
            models.Index(fields=["org"], name="budget_org_idx"),
        ]

    def __str__(self) -> str:
        scope = ", ".join(
            f"{name}={getattr(self, name)}" for name in self.SCOPE_FIELDS if getattr(self, name)
        )
        label = self.name or f"{self.org} {self.period}"
        return f"{label} ({scope})" if scope else label

    @property
    def blocks(self) -> bool:
        return self.action == self.Action.BLOCK


class BudgetSpend(models.Model):
    """What a budget's scope spent in one period: a counter that ingest, edits and deletes move
    (accounting.budgets.budget_usage_apply), so that a hold reads one row instead of a period of rows."""

    budget = models.ForeignKey(Budget, on_delete=models.CASCADE, related_name="spends")
    period_start = models.DateTimeField(help_text="The period's start (UTC); 1970-01-01 for `total`.")
    spent = models.DecimalField(max_digits=SPENT_DIGITS, decimal_places=MONEY_PLACES, default=Decimal(0))
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        db_table = "accounting_budget_spend"
        constraints = [
            # One counter per budget and period: ingest adds to it with INSERT ... ON CONFLICT.
            models.UniqueConstraint(fields=["budget", "period_start"], name="budget_spend_period_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.budget_id} {self.period_start:%Y-%m-%d}: {self.spent}"


class Hold(models.Model):
    """Money reserved for one LLM call before it is made, against the org's customer account and every
    blocking budget in its scope. The usage record with the same (userorgid, transno) settles it when it
    is posted, failed or skipped; otherwise it is released, or expires at `expires_at`."""

    class Status(models.TextChoices):
        ACTIVE = "active"
        SETTLED = "settled"
        RELEASED = "released"
        EXPIRED = "expired"

    id = models.UUIDField(primary_key=True, default=uuid7, editable=False)
    org = models.CharField(max_length=64, help_text="The org (userorgid) that will pay for the call.")
    transno = models.CharField(max_length=128, help_text="The gateway's request id of the call.")
    userid = models.CharField(max_length=64, blank=True, default="")
    token_name = models.CharField(max_length=150, blank=True, default="")
    model_name = models.CharField(max_length=150, blank=True, default="")
    feature = models.CharField(max_length=64, blank=True, default="")
    amount = money_field()
    currency = models.CharField(max_length=3, default="USD")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.ACTIVE)
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()
    ended_at = models.DateTimeField(null=True, blank=True)
    created_by = models.CharField(max_length=150, blank=True, default="")

    class Meta:
        db_table = "accounting_hold"
        ordering = ["-id"]
        constraints = [
            # A transno names one call of an org: a gateway that asks again gets the same hold back.
            models.UniqueConstraint(fields=["org", "transno"], name="hold_org_transno_unique"),
            models.CheckConstraint(condition=Q(amount__gte=0), name="hold_amount_not_negative"),
        ]
        indexes = [
            # Admission sums an org's active holds (the account rule and each budget's `held`); only
            # the few calls in flight are active, so the partial index stays small.
            models.Index(
                fields=["org", "expires_at"], condition=Q(status="active"), name="hold_active_org_idx"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.org} {self.transno}: {self.amount} ({self.status})"


class BudgetAlert(models.Model):
    """One threshold crossed by one budget in one period, and the delivery of its webhook."""

    class Status(models.TextChoices):
        PENDING = "pending"  # to deliver (again, from next_attempt_at)
        DELIVERED = "delivered"
        FAILED = "failed"  # gave up after MAX_ATTEMPTS
        NO_WEBHOOK = "no_webhook"  # recorded only: the budget has no webhook

    id = models.UUIDField(primary_key=True, default=uuid7, editable=False)  # the event id sent
    budget = models.ForeignKey(Budget, on_delete=models.CASCADE, related_name="alerts")
    period_start = models.DateTimeField()
    period_end = models.DateTimeField(null=True, blank=True)
    threshold = models.PositiveSmallIntegerField()
    spent = models.DecimalField(max_digits=SPENT_DIGITS, decimal_places=MONEY_PLACES)
    limit = money_field()
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    last_status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    last_error = models.TextField(blank=True, default="")
    next_attempt_at = models.DateTimeField(default=timezone.now)
    created_at = models.DateTimeField(default=timezone.now)
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = "accounting_budget_alert"
        ordering = ["-id"]
        constraints = [
            # One alert per budget, period and threshold, whatever runs of the job overlap.
            models.UniqueConstraint(
                fields=["budget", "period_start", "threshold"], name="budget_alert_once_per_threshold"
            ),
        ]
        indexes = [
            # The job's delivery queue: pending alerts whose backoff has passed.
            models.Index(
                fields=["next_attempt_at"], condition=Q(status="pending"), name="budget_alert_due_idx"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.budget} {self.threshold}% ({self.status})"
