"""The ledger side. It never imports llmlog's models: it receives plain values and ids."""

from django.db import models
from django.db.models import Q

MONEY_DIGITS = 18
MONEY_PLACES = 5


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
    amount = models.DecimalField(max_digits=MONEY_DIGITS, decimal_places=MONEY_PLACES, null=True, blank=True)
    cost = models.DecimalField(max_digits=MONEY_DIGITS, decimal_places=MONEY_PLACES, null=True, blank=True)
    use_date = models.DateField()
    error_code = models.CharField(max_length=32, choices=ErrorCode.choices)
    error_message = models.TextField(blank=True, default="")
    attempts = models.PositiveIntegerField(default=1)
    first_failed_at = models.DateTimeField()
    last_failed_at = models.DateTimeField()
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
            # The retry job reads only open failures.
            models.Index(fields=["last_failed_at"], condition=Q(status="open"), name="acct_failed_open_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.transno}: {self.error_code} ({self.status})"
