"""The ledger side. It never imports llmlog's models: it receives plain values and ids.

A double-entry ledger. Every movement of money is a `LedgerTransaction` whose `LedgerLine`s sum to zero;
an `Account`'s balance is the sum of its lines, kept up to date by the services in `accounting.ledger`
(with F() under a row lock), never by `save()`.

Accounts: one `customer` account and one `owner` account per org at most (an org can be both: it uses
models and sells its own), and one `platform` and one `external` account per currency. `external` is the
world outside the ledger: a top-up moves money from it to a customer, so the ledger as a whole always
sums to zero and the platform's balance is its margin alone.
"""

from decimal import Decimal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Q
from django.utils import timezone
from uuid_utils.compat import uuid7

from core.money import MONEY_PLACES, money_field


def default_time_zone() -> str:
    """TIME_ZONE: the zone of a budget's periods and of an account's statements unless they name one."""
    return settings.TIME_ZONE


def validate_time_zone(name: str) -> None:
    """An IANA zone name that zoneinfo knows, or a ValidationError naming it."""
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: "America" is a folder of zones
        raise ValidationError(f"{name!r} is not an IANA time zone such as Europe/Paris.") from None


class Account(models.Model):
    """An org's money in the ledger: what a customer has left to spend, what an owner has earned."""

    class Kind(models.TextChoices):
        CUSTOMER = "customer", "customer (pays for usage)"
        OWNER = "owner", "model owner (receives the cost)"
        PLATFORM = "platform", "platform (keeps the margin)"
        EXTERNAL = "external", "external (money in and out of the ledger)"

    class Status(models.TextChoices):
        ACTIVE = "active"
        FROZEN = "frozen"

    # The kinds an operator creates; `external` accounts are made by the ledger on the first top-up.
    CREATABLE_KINDS = (Kind.CUSTOMER, Kind.OWNER, Kind.PLATFORM)
    CREATABLE_KIND_CHOICES = [(kind.value, kind.label) for kind in CREATABLE_KINDS]
    EXTERNAL_ORG = "external"

    org = models.CharField(
        max_length=64, help_text="The org id (userorgid for customers, ownerid for owners)."
    )
    kind = models.CharField(max_length=16, choices=Kind.choices)
    currency = models.CharField(max_length=3, default="USD")
    balance = money_field(default=Decimal(0), editable=False, help_text="The sum of this account's lines.")
    credit_limit = money_field(
        default=Decimal(0), help_text="How far below zero a customer's balance may go."
    )
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.ACTIVE)
    # Set on create and changed through accounting.ledger (the API, the admin), which validate it.
    time_zone = models.CharField(
        max_length=64,
        default=default_time_zone,
        validators=[validate_time_zone],
        help_text="The zone whose months the org's statements cover (accounting.statements).",
    )
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        db_table = "accounting_account"
        ordering = ["org", "kind"]
        constraints = [
            # Posting finds an org's account by (org, kind): one of each per org. This unique index also
            # serves that lookup and the API's /api/accounts/{org}/.
            models.UniqueConstraint(
                fields=["org", "kind"],
                condition=Q(kind__in=["customer", "owner"]),
                name="account_org_kind_unique",
            ),
            # One platform and one external account per currency: posting finds them by currency.
            models.UniqueConstraint(
                fields=["kind", "currency"],
                condition=Q(kind__in=["platform", "external"]),
                name="account_system_currency_unique",
            ),
            models.CheckConstraint(
                condition=Q(credit_limit__gte=0), name="account_credit_limit_not_negative"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.org} ({self.kind}, {self.currency})"


class LedgerTransaction(models.Model):
    """One movement of money: a usage record's posting, a top-up, or an operator's adjustment."""

    class Kind(models.TextChoices):
        USAGE = "usage"
        TOPUP = "topup"
        ADJUSTMENT = "adjustment"

    id = models.UUIDField(primary_key=True, default=uuid7, editable=False)  # v7: time-ordered
    kind = models.CharField(max_length=16, choices=Kind.choices)
    usage_id = models.UUIDField(
        null=True, blank=True, help_text="The llmusage record this posts (usage only)."
    )
    reference = models.CharField(
        max_length=128,
        blank=True,
        default="",
        help_text="usage: the record's transno; top-up/adjustment: the caller's idempotency key.",
    )
    currency = models.CharField(max_length=3)
    amount = money_field(help_text="The gross amount moved: what the customer paid, or the top-up.")
    memo = models.CharField(max_length=255, blank=True, default="")
    created_by = models.CharField(max_length=150, blank=True, default="")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        db_table = "accounting_ledger_transaction"
        # Newest first by the time-ordered id: its primary-key index serves the admin's list, so the
        # hot insert path (one row per usage record) maintains no index on created_at.
        ordering = ["-id"]
        constraints = [
            # Posting is exactly-once whatever retries or concurrent workers do: a second transaction
            # for the same usage record cannot exist. Its index also answers "is this record posted?".
            models.UniqueConstraint(fields=["usage_id"], name="ledger_transaction_usage_idempotency"),
            # A client that resends a top-up with the same reference gets the first one back.
            models.UniqueConstraint(
                fields=["kind", "reference"],
                condition=~Q(kind="usage") & ~Q(reference=""),
                name="ledger_transaction_reference_idempotency",
            ),
            models.CheckConstraint(
                condition=(Q(kind="usage") & Q(usage_id__isnull=False))
                | (~Q(kind="usage") & Q(usage_id__isnull=True)),
                name="ledger_transaction_usage_id_iff_usage",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.reference or self.pk} {self.amount} {self.currency}"


class LedgerLine(models.Model):
    """One account's share of a transaction: positive credits the account, negative debits it."""

    transaction = models.ForeignKey(LedgerTransaction, on_delete=models.PROTECT, related_name="lines")
    account = models.ForeignKey(Account, on_delete=models.PROTECT, related_name="lines", db_index=False)
    amount = money_field()

    class Meta:
        db_table = "accounting_ledger_line"
        constraints = [
            # A line that moves nothing is never written.
            models.CheckConstraint(condition=~Q(amount=0), name="ledger_line_amount_not_zero"),
        ]
        indexes = [
            # An org reads its ledger lines newest first (/api/accounts/{org}/lines); the balance check
            # sums them per account.
            models.Index(fields=["account", "-id"], name="ledger_line_account_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.account_id}: {self.amount}"


class AccountingFailure(models.Model):
    """One row per usage record whose posting failed: where an operator finds it and retries it."""

    class ErrorCode(models.TextChoices):
        NO_ACCOUNT = "no_account"
        ACCOUNT_FROZEN = "account_frozen"
        INSUFFICIENT_BALANCE = "insufficient_balance"
        NO_PRICE = "no_price"
        INTERNAL = "internal"

    class Status(models.TextChoices):
        OPEN = "open"
        RESOLVED = "resolved"
        IGNORED = "ignored"

    usage_id = models.UUIDField(unique=True, help_text="The llmusage record (one failure row per record).")
    transno = models.CharField(max_length=128)
    userid = models.CharField(max_length=64, blank=True, default="")
    userorgid = models.CharField(max_length=64, blank=True, default="")
    ownerid = models.CharField(max_length=64, blank=True, default="")
    llmid = models.CharField(max_length=64, blank=True, default="")
    model_name = models.CharField(max_length=150, blank=True, default="")
    amount = money_field(null=True, blank=True)
    cost = money_field(null=True, blank=True)
    use_date = models.DateField()
    error_code = models.CharField(max_length=32, choices=ErrorCode.choices)
    error_message = models.TextField(blank=True, default="")
    attempts = models.PositiveIntegerField(default=1)
    first_failed_at = models.DateTimeField()
    last_failed_at = models.DateTimeField()
    next_retry_at = models.DateTimeField(
        default=timezone.now, help_text="The retry job takes an open failure from then on (backoff)."
    )
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.OPEN)
    resolved_at = models.DateTimeField(null=True, blank=True)
    resolved_by = models.CharField(max_length=150, blank=True, default="")

    class Meta:
        db_table = "llmusage_accounting_failed"
        ordering = ["-last_failed_at"]
        indexes = [
            # The failures page: newest first within a day range, usually per org.
            models.Index(fields=["use_date"], name="acct_failed_use_date_idx"),
            models.Index(fields=["userorgid", "use_date"], name="acct_failed_org_date_idx"),
            models.Index(fields=["transno"], name="acct_failed_transno_idx"),
            # The failures admin's default order (newest failure first) without sorting the table.
            models.Index(fields=["-last_failed_at", "-id"], name="acct_failed_last_failed_idx"),
            # The scheduled retry reads only open failures whose backoff has passed.
            models.Index(
                fields=["next_retry_at"], condition=Q(status="open"), name="acct_failed_retry_due_idx"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.transno}: {self.error_code} ({self.status})"


# --- budgets and holds ----------------------------------------------------------------------------
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


# --- re-pricing -----------------------------------------------------------------------------------
class Repricing(models.Model):
    """One re-pricing of past usage with the price book as it is now: its parameters and its report.

    A dry run keeps the report (per org and model in `summary`, per record in `RepricingItem`); applying
    it posts `adjustment` transactions for accounted records, never editing a past posting.
    """

    class Status(models.TextChoices):
        DRY_RUN = "dry_run", "dry run"
        APPLIED = "applied", "applied"

    start = models.DateField(help_text="First use_date re-priced.")
    end = models.DateField(help_text="Last use_date re-priced (inclusive).")
    model_name = models.CharField(max_length=150, blank=True, default="", help_text="Empty: any.")
    userorgid = models.CharField(max_length=64, blank=True, default="", help_text="Empty: any org.")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.DRY_RUN)
    records = models.PositiveBigIntegerField(default=0, help_text="Records in scope.")
    changed = models.PositiveBigIntegerField(default=0, help_text="Records whose amount or cost changes.")
    delta_amount = money_field(default=Decimal(0))
    delta_cost = money_field(default=Decimal(0))
    summary = models.JSONField(
        default=list, blank=True, help_text="Per (org, model): records, old/new amount and cost, deltas."
    )
    created_by = models.CharField(max_length=150, blank=True, default="")
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    applied_by = models.CharField(max_length=150, blank=True, default="")
    applied_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = "accounting_repricing"
        ordering = ["-id"]

    def __str__(self) -> str:
        scope = " ".join(part for part in (self.userorgid, self.model_name) if part)
        return f"repricing {self.pk} {self.start}..{self.end} {scope} ({self.status})".replace("  ", " ")


class RepricingItem(models.Model):
    """One record a re-pricing changes: its old and new figures, and the adjustment that moved them.

    "Old" is what the record was charged plus every adjustment applied to it before, so re-pricing
    again with the same prices finds nothing to change. An accounted record's item links to the
    `adjustment` transaction that posted its delta; a pending or failed record is re-priced in place
    (nothing was charged yet) and its item keeps `adjustment` empty.
    """

    class Treatment(models.TextChoices):
        ADJUSTMENT = "adjustment", "adjustment (accounted: the ledger moves the delta)"
        IN_PLACE = "in_place", "in place (not charged yet: the record is re-priced)"

    repricing = models.ForeignKey(Repricing, on_delete=models.CASCADE, related_name="items")
    usage_id = models.UUIDField(help_text="The llmusage record (hot or history).")
    transno = models.CharField(max_length=128)
    userorgid = models.CharField(max_length=64, blank=True, default="")
    ownerid = models.CharField(max_length=64, blank=True, default="")
    model_name = models.CharField(max_length=150, blank=True, default="")
    use_date = models.DateField()
    currency = models.CharField(max_length=3, default="USD")
    treatment = models.CharField(max_length=16, choices=Treatment.choices)
    old_amount = money_field()
    new_amount = money_field()
    old_cost = money_field()
    new_cost = money_field()
    adjustment = models.ForeignKey(
        LedgerTransaction,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="repricing_items",
        db_index=False,
        help_text="The adjustment transaction that posted this record's delta (once applied).",
    )

    class Meta:
        db_table = "accounting_repricing_item"
        ordering = ["id"]
        constraints = [
            # A re-pricing changes a record once: applying it twice finds the same items, not new ones.
            models.UniqueConstraint(fields=["repricing", "usage_id"], name="repricing_item_once_per_record"),
        ]
        indexes = [
            # A record's earlier adjustments (its "old" figures) and its link to them; stats sum them.
            models.Index(fields=["usage_id"], name="repricing_item_usage_idx"),
            # An adjustment's records (the admin and the ledger's lines page).
            models.Index(
                fields=["adjustment"], condition=Q(adjustment__isnull=False), name="repricing_item_adj_idx"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.transno}: {self.old_amount} -> {self.new_amount}"

    @property
    def delta_amount(self) -> Decimal:
        return self.new_amount - self.old_amount

    @property
    def delta_cost(self) -> Decimal:
        return self.new_cost - self.old_cost


# --- statements ------------------------------------------------------------------------------------


class Statement(models.Model):
    """A customer account's closed month: a stored snapshot that nothing changes after the close.

    Which ledger lines a statement counts (accounting.statements): the lines of the account whose
    transaction was created before `period_end` AND whose id is at most `closing_line_id` (the highest
    line id of the account when the close held the account's lock), minus those the previous statement
    counted (created before `opening_before`, id at most `opening_line_id`). A line committed after the
    close has a higher id, whatever its created_at says, so it falls in the next open statement, once.
    """

    account = models.ForeignKey(Account, on_delete=models.PROTECT, related_name="statements")
    month = models.DateField(help_text="The first day of the month in the account's time zone.")
    time_zone = models.CharField(max_length=64)
    currency = models.CharField(max_length=3)
    period_start = models.DateTimeField(help_text="The month's first instant in `time_zone`.")
    period_end = models.DateTimeField(help_text="The next month's first instant (exclusive).")
    opening_before = models.DateTimeField(
        help_text="The previous statement's period_end (or this period_start for the first statement)."
    )
    opening_line_id = models.BigIntegerField(
        help_text="The highest line id the previous statement counted (or this close's, for the first)."
    )
    closing_line_id = models.BigIntegerField(
        help_text="The account's highest ledger line id when the close held its lock."
    )
    carried_from_line_id = models.BigIntegerField(
        help_text="The lowest line id this statement left to the next (created at or after period_end), "
        "or closing_line_id + 1: the next close reads the account's lines from there on."
    )
    opening_balance = money_field()
    charges = money_field(help_text="What usage took from the account (positive: charged).")
    topups = money_field()
    adjustments = money_field(help_text="Operator adjustments and re-pricing, signed as they moved it.")
    closing_balance = money_field()
    requests = models.PositiveBigIntegerField(default=0, help_text="Usage records charged.")
    data = models.JSONField(help_text="The statement as the API answers it, breakdowns included.")
    closed_at = models.DateTimeField(default=timezone.now)
    closed_by = models.CharField(max_length=150, blank=True, default="")

    class Meta:
        db_table = "accounting_statement"
        ordering = ["account", "-month"]
        constraints = [
            # A month closes once per account: two closes at once cannot both write one.
            models.UniqueConstraint(fields=["account", "month"], name="statement_account_month_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.account.org} {self.month:%Y-%m}"

    @property
    def month_text(self) -> str:
        return f"{self.month:%Y-%m}"
