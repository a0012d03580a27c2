"""Re-pricing past usage with today's price book: each run's parameters and report, and the records
it changes, linked to the `adjustment` transactions that moved their deltas.
"""

from decimal import Decimal

from django.db import models
from django.db.models import Q
from django.utils import timezone

from accounting.models.accounts import LedgerTransaction
from core.money import money_field


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
