"""The ledger itself: accounts, and the double-entry transactions and lines that move money between them.

Every movement of money is a `LedgerTransaction` whose `LedgerLine`s sum to zero; an `Account`'s balance
is the sum of its lines, kept up to date by the services in `accounting.ledger` (with F() under a row
lock), never by `save()`.

Accounts: one `customer` account and one `owner` account per org at most (an org can be both: it uses
models and sells its own), and one `platform` and one `external` account per currency. `external` is the
world outside the ledger: a top-up moves money from it to a customer, so the ledger as a whole always
sums to zero and the platform's balance is its margin alone.

The time zone helpers live beside the account whose statement zone they default and validate; budgets
import the default too. Migrations name them `accounting.models.default_time_zone` and
`accounting.models.validate_time_zone`, which the package's `__init__` keeps resolving.
"""

from decimal import Decimal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Q
from django.utils import timezone
from uuid_utils.compat import uuid7

from core.money import money_field


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
