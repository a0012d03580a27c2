"""Postings that failed: one row per usage record, kept until an operator (or the retry job) settles it."""

from django.db import models
from django.db.models import Q
from django.utils import timezone

from core.money import money_field


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
