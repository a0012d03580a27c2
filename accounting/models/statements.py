"""A customer account's monthly statements: closed months, stored as snapshots (accounting.statements)."""

from django.db import models
from django.utils import timezone

from accounting.models.accounts import Account
from core.money import money_field


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
