"""The hourly rollup buckets, how far they are built, and the hours marked stale."""

import uuid

from django.db import models
from django.utils import timezone

from core.money import MONEY_DIGITS, MONEY_PLACES
from llmlog.models.usage import UsageStatus

# A rollup bucket sums many records' money: ten more digits than one record's.
ROLLUP_MONEY_DIGITS = MONEY_DIGITS + 10


class UsageRollup(models.Model):
    """Usage of one UTC hour per (userorgid, model_name, status): what stats read for closed hours.

    Built from the rows by `llmlog.rollups.build_usage_rollups`; rebuilding an hour replaces its buckets.
    """

    hour = models.DateTimeField(help_text="Start of the UTC hour.")
    userorgid = models.CharField(max_length=64, blank=True, default="")
    model_name = models.CharField(max_length=150)
    status = models.CharField(max_length=16, choices=UsageStatus.choices)
    requests = models.PositiveBigIntegerField(default=0)
    input_tokens = models.PositiveBigIntegerField(default=0)
    output_tokens = models.PositiveBigIntegerField(default=0)
    cached_tokens = models.PositiveBigIntegerField(default=0)
    cache_creation_tokens = models.PositiveBigIntegerField(default=0)
    reasoning_tokens = models.PositiveBigIntegerField(default=0)
    image_input_tokens = models.PositiveBigIntegerField(default=0)
    web_search_count = models.PositiveBigIntegerField(default=0)
    total_tokens = models.PositiveBigIntegerField(default=0)
    # Sums of many records: ten digits wider than one record's money, so no bucket can overflow.
    amount = models.DecimalField(max_digits=ROLLUP_MONEY_DIGITS, decimal_places=MONEY_PLACES, default=0)
    cost = models.DecimalField(max_digits=ROLLUP_MONEY_DIGITS, decimal_places=MONEY_PLACES, default=0)
    built_at = models.DateTimeField(default=timezone.now)

    class Meta:
        db_table = "llmusage_rollup"
        constraints = [
            # One bucket per hour and dimensions: a rebuild replaces, never adds.
            models.UniqueConstraint(
                fields=["hour", "userorgid", "model_name", "status"], name="usage_rollup_bucket_unique"
            ),
        ]
        indexes = [
            # An org's stats over a time range (usage_stats with an org key or a userorgid filter).
            models.Index(fields=["userorgid", "hour"], name="usage_rollup_org_hour_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.hour:%Y-%m-%d %H}h {self.userorgid} {self.model_name} {self.status}"


class UsageRollupState(models.Model):
    """Where the rollups stand (one row): every UTC hour before `built_through` is built, and rows
    ingested before `scanned_at` have had their hour rebuilt."""

    name = models.CharField(max_length=32, unique=True, default="usage")
    built_through = models.DateTimeField(null=True, blank=True, help_text="Hours before this are built.")
    scanned_at = models.DateTimeField(null=True, blank=True, help_text="Late records before this are in.")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        db_table = "llmusage_rollup_state"

    def __str__(self) -> str:
        return f"rollups built through {self.built_through}"


class UsageRollupStale(models.Model):
    """A UTC hour whose buckets may not match its rows: a record of it changed (posting-time pricing, an
    edit, a delete, a purge) and its rebuild has not committed yet, or its rebuild failed (`error`).

    Marked in the transaction that changes the record, so no reader ever sees the change without the
    mark; stats and totals read such an hour from its rows (llmlog.selectors.rollup_reads). The rebuild
    deletes the mark only if `token` is still the one it read: a change marked while it ran keeps it.
    """

    hour = models.DateTimeField(unique=True, help_text="Start of the UTC hour.")
    token = models.UUIDField(default=uuid.uuid4, help_text="New at each mark.")
    marked_at = models.DateTimeField(default=timezone.now)
    error = models.TextField(blank=True, default="", help_text="Why its last rebuild failed, if it did.")

    class Meta:
        db_table = "llmusage_rollup_stale"

    def __str__(self) -> str:
        return f"{self.hour:%Y-%m-%d %H}h stale"
