"""The usage tables (llmage's names), model prices and API keys."""

import hashlib
import secrets
import uuid

from django.db import models
from django.db.models import F, Q
from django.utils import timezone
from django.utils.deconstruct import deconstructible
from uuid_utils.compat import uuid7

from core.money import MONEY_DIGITS, MONEY_PLACES, money_field

# A rollup bucket sums many records' money: ten more digits than one record's.
ROLLUP_MONEY_DIGITS = MONEY_DIGITS + 10


# The counts every usage record carries (web searches with the token kinds); total_tokens = input + output.
TOKEN_COUNT_FIELDS = (
    "input_tokens",
    "output_tokens",
    "cached_tokens",
    "cache_creation_tokens",
    "reasoning_tokens",
    "image_input_tokens",
    "web_search_count",
)


class UsageStatus(models.TextChoices):
    SUCCESS = "success"
    FAILED = "failed"


class AccountingStatus(models.TextChoices):
    PENDING = "pending"
    ACCOUNTED = "accounted"
    FAILED = "failed"
    SKIPPED = "skipped"


@deconstructible(path="llmlog.models.NextUsageSeq")
class NextUsageSeq(models.Expression):
    """The database default of `seq`: the next number of the `llmusage_seq` sequence on PostgreSQL.

    SQLite has no sequences and allows no sub-query in a default: there the column defaults to NULL and
    an AFTER INSERT trigger (migration 0008) gives the row the next number of an AUTOINCREMENT counter.
    """

    output_field = models.BigIntegerField()
    allowed_default = True  # Django's check (fields.E012) refuses an expression in db_default otherwise

    def as_sql(self, compiler, connection):  # noqa: ANN001, ANN201 - Django's expression protocol
        return "NULL", []

    def as_postgresql(self, compiler, connection):  # noqa: ANN001, ANN201
        return "nextval('llmusage_seq')", []

    def __eq__(self, other: object) -> bool:
        return isinstance(other, NextUsageSeq)

    def __hash__(self) -> int:
        return hash(NextUsageSeq)


class UsageRecord(models.Model):
    """One LLM call as the gateway reported it. `llmusage` and `llmusage_history` share these fields."""

    # identity
    id = models.UUIDField(primary_key=True, default=uuid7, editable=False)  # v7: time-ordered
    transno = models.CharField(
        max_length=128, help_text="The gateway's request id; with userorgid, the idempotency key."
    )
    taskid = models.CharField(max_length=256, blank=True, default="")
    # A sequential 64-bit number given at ingest by the database and kept when the record moves to
    # history: the integer `id` of the new-api and AI Proxy dialects, whose clients declare ids as numbers.
    # Null only for a moment on SQLite, between the insert and its trigger (NOT NULL on PostgreSQL).
    seq = models.BigIntegerField(null=True, blank=True, db_default=NextUsageSeq(), editable=False)
    # time
    use_date = models.DateField(help_text="Day of use_time in TIME_ZONE.")
    use_time = models.DateTimeField(help_text="Request start.")
    responsed_seconds = models.FloatField(null=True, blank=True, help_text="Time to first byte.")
    finish_seconds = models.FloatField(null=True, blank=True, help_text="Total duration.")
    created_at = models.DateTimeField(default=timezone.now, help_text="Ingest time.")
    # who
    userid = models.CharField(max_length=64, blank=True, default="")
    username = models.CharField(max_length=150, blank=True, default="")
    userorgid = models.CharField(max_length=64, blank=True, default="")
    token_id = models.CharField(max_length=64, blank=True, default="")
    token_name = models.CharField(max_length=150, blank=True, default="")
    token_key_hash = models.CharField(
        max_length=64, blank=True, default="", help_text="sha256 of the gateway key; never the key."
    )
    group = models.CharField(max_length=64, blank=True, default="")
    request_ip = models.GenericIPAddressField(null=True, blank=True)
    feature = models.CharField(max_length=64, blank=True, default="")
    # what
    llmid = models.CharField(max_length=64, blank=True, default="")
    model_name = models.CharField(max_length=150)
    ownerid = models.CharField(max_length=64, blank=True, default="", help_text="Org that owns the model.")
    provider = models.CharField(max_length=64, blank=True, default="")
    provider_type = models.CharField(max_length=32, blank=True, default="")
    channel_id = models.CharField(max_length=64, blank=True, default="")
    is_local = models.BooleanField(default=False)
    is_global_provider = models.BooleanField(default=False)
    endpoint = models.CharField(max_length=255, blank=True, default="")
    is_stream = models.BooleanField(default=False)
    # usage: input_tokens includes cached and cache-creation tokens; output_tokens includes reasoning.
    input_tokens = models.PositiveBigIntegerField(default=0)
    output_tokens = models.PositiveBigIntegerField(default=0)
    cached_tokens = models.PositiveBigIntegerField(default=0)
    cache_creation_tokens = models.PositiveBigIntegerField(default=0)
    reasoning_tokens = models.PositiveBigIntegerField(default=0)
    image_input_tokens = models.PositiveBigIntegerField(default=0)
    web_search_count = models.PositiveIntegerField(default=0)
    total_tokens = models.PositiveBigIntegerField(default=0)
    usages = models.JSONField(null=True, blank=True, help_text="The provider's raw usage object.")
    # money: null means "not priced yet" (no amount sent and no price found)
    amount = money_field(null=True, blank=True, help_text="Charged to the user's org.")
    cost = money_field(null=True, blank=True, help_text="Paid to the model owner.")
    provider_cost = money_field(
        null=True,
        blank=True,
        help_text="What the gateway or provider reported the call cost; null: not reported.",
    )
    currency = models.CharField(max_length=3, default="USD")
    price = models.JSONField(null=True, blank=True, help_text="Snapshot of the unit prices applied.")
    # outcome
    status = models.CharField(max_length=16, choices=UsageStatus.choices, default=UsageStatus.SUCCESS)
    code = models.IntegerField(null=True, blank=True, help_text="HTTP status.")
    error_message = models.TextField(blank=True, default="")
    retry_times = models.PositiveIntegerField(default=0)
    # content
    ioinfo = models.JSONField(null=True, blank=True, help_text="{request, response, truncated}")
    # accounting
    accounting_status = models.CharField(
        max_length=16, choices=AccountingStatus.choices, default=AccountingStatus.PENDING
    )
    accounted_at = models.DateTimeField(null=True, blank=True)
    # tags
    metadata = models.JSONField(default=dict, blank=True)
    # sha256 of the record as the gateway sent it: a resend with the same transno is a duplicate
    # only when this matches, otherwise it is a conflict (409).
    payload_hash = models.CharField(max_length=64, blank=True, default="", editable=False)

    class Meta:
        abstract = True
        constraints = [
            # Idempotency per tenant: a transno names a call within its org, so one org's transnos can
            # never block (or reveal) another's records.
            models.UniqueConstraint(fields=["transno", "userorgid"], name="%(class)s_org_transno_unique"),
            models.CheckConstraint(
                # cache reads, cache writes and image tokens are disjoint parts of the prompt
                condition=Q(
                    cached_tokens__lte=F("input_tokens")
                    - F("cache_creation_tokens")
                    - F("image_input_tokens")
                ),
                name="%(class)s_prompt_parts_within_input",
            ),
            models.CheckConstraint(
                condition=Q(reasoning_tokens__lte=F("output_tokens")),
                name="%(class)s_reasoning_within_output",
            ),
            models.CheckConstraint(
                condition=Q(total_tokens=F("input_tokens") + F("output_tokens")),
                name="%(class)s_total_is_input_plus_output",
            ),
            models.CheckConstraint(
                condition=Q(amount__isnull=True) | Q(amount__gte=0), name="%(class)s_amount_not_negative"
            ),
            models.CheckConstraint(
                condition=Q(cost__isnull=True) | Q(cost__gte=0), name="%(class)s_cost_not_negative"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.transno} {self.model_name} {self.use_time:%Y-%m-%d %H:%M:%S}"


class LLMUsage(UsageRecord):
    """The hot table: today's records and every record not yet accounted."""

    class Meta(UsageRecord.Meta):
        db_table = "llmusage"
        verbose_name = "LLM usage"
        verbose_name_plural = "LLM usage"
        indexes = [
            # An org's newest records first: the list page and the org's time-range stats.
            models.Index(fields=["userorgid", "-use_time"], name="llmusage_org_time_idx"),
            # Time-range queries across all orgs; the admin's default ordering.
            models.Index(fields=["-use_time"], name="llmusage_time_idx"),
            # The nightly backup selects accounted records by use_date.
            models.Index(fields=["use_date"], name="llmusage_use_date_idx"),
            models.Index(fields=["llmid"], name="llmusage_llmid_idx"),
            # Keyword search (/api/llmusage/search/, the dialects' search) matches these columns
            # exactly, newest first; the same indexes serve the list filtered by one of them.
            models.Index(fields=["userid", "-use_time"], name="llmusage_userid_time_idx"),
            models.Index(fields=["username", "-use_time"], name="llmusage_username_time_idx"),
            models.Index(fields=["model_name", "-use_time"], name="llmusage_model_time_idx"),
            models.Index(fields=["token_name", "-use_time"], name="llmusage_token_time_idx"),
            # new-api's search: a keyword that is a prefix of a log's content ("gpt-4o: 12 prompt ...")
            # is a prefix of its model_name (LIKE 'k%' needs the pattern operators on PostgreSQL).
            models.Index(
                fields=["model_name"], opclasses=["varchar_pattern_ops"], name="llmusage_model_prefix_idx"
            ),
            # new-api's /api/log/token?key=: a gateway key's own records, newest first.
            models.Index(
                fields=["token_key_hash", "-use_time"],
                condition=~Q(token_key_hash=""),
                name="llmusage_key_time_idx",
            ),
            # The posting queue: only pending rows, oldest (time-ordered uuid) first.
            models.Index(
                fields=["id"], condition=Q(accounting_status="pending"), name="llmusage_pending_idx"
            ),
        ]
        constraints = [
            *UsageRecord.Meta.constraints,
            # Each number once; history keeps the number its record had here (and has its own index).
            models.UniqueConstraint(fields=["seq"], name="llmusage_seq_unique"),
        ]


class LLMUsageHistory(UsageRecord):
    """Accounted records of past days, moved here nightly with their id.

    On PostgreSQL the table is partitioned by month of use_date (migration 0006, llmlog.partitions),
    and PostgreSQL wants every unique key of a partitioned table to include the partition key: in the
    database the primary key is (id, use_date) and `llmusagehistory_org_transno_unique` is (transno,
    userorgid, use_date). Django's state keeps id as the primary key and (transno, userorgid) unique, and
    both stay true by construction: a row reaches history only by the backup's move out of llmusage,
    where id and (userorgid, transno) are unique, and ingest refuses an org's transno already in history
    (llmlog.ingest looks in both), so it never enters llmusage again once it is in history.
    tests/llmlog/test_partitions.py proves it.
    """

    backup_time = models.DateTimeField(db_index=False)

    class Meta(UsageRecord.Meta):
        db_table = "llmusage_history"
        verbose_name = "LLM usage history"
        verbose_name_plural = "LLM usage history"
        indexes = [
            # Day-range queries; the retention purge deletes by use_date (llmlog.backup.purge_history).
            models.Index(fields=["use_date"], name="llmusage_hist_use_date_idx"),
            models.Index(fields=["userorgid", "-use_time"], name="llmusage_hist_org_time_idx"),
            models.Index(fields=["-use_time"], name="llmusage_hist_time_idx"),
            models.Index(fields=["llmid"], name="llmusage_hist_llmid_idx"),
            # Keyword search and one-column filters, as on llmusage (both branches of llmusage_all).
            models.Index(fields=["userid", "-use_time"], name="llmusage_hist_userid_time_idx"),
            models.Index(fields=["username", "-use_time"], name="llmusage_hist_username_idx"),
            models.Index(fields=["model_name", "-use_time"], name="llmusage_hist_model_time_idx"),
            models.Index(fields=["token_name", "-use_time"], name="llmusage_hist_token_time_idx"),
            models.Index(
                fields=["model_name"], opclasses=["varchar_pattern_ops"], name="llmusage_hist_model_prefix"
            ),
            # A record by its dialect id (seq); unique by construction: history's rows come from llmusage,
            # where seq is unique, and PostgreSQL's unique keys of a partitioned table must hold use_date.
            models.Index(fields=["seq"], name="llmusage_hist_seq_idx"),
            models.Index(
                fields=["token_key_hash", "-use_time"],
                condition=~Q(token_key_hash=""),
                name="llmusage_hist_key_time_idx",
            ),
            # What a given night's backup moved (an operator's audit of one run).
            models.Index(fields=["backup_time"], name="llmusage_hist_backup_idx"),
        ]


class ModelPrice(models.Model):
    """Unit prices of one model from a moment on. `sale` prices make `amount`, `cost` prices make `cost`."""

    class Kind(models.TextChoices):
        SALE = "sale", "sale (charged to the customer org)"
        COST = "cost", "cost (paid to the model owner)"

    model_name = models.CharField(max_length=150)
    ownerid = models.CharField(
        max_length=64,
        blank=True,
        default="",
        help_text="The org that owns the model and receives its cost; records priced here take it.",
    )
    kind = models.CharField(max_length=8, choices=Kind.choices, default=Kind.SALE)
    effective_from = models.DateTimeField(default=timezone.now)
    currency = models.CharField(max_length=3, default="USD")
    # per 1M tokens
    input_price = money_field(default=0, help_text="Per 1M uncached input tokens.")
    output_price = money_field(default=0, help_text="Per 1M output tokens.")
    cached_input_price = money_field(null=True, blank=True, help_text="Per 1M cache reads; empty: input.")
    cache_creation_price = money_field(
        null=True, blank=True, help_text="Per 1M cache writes; empty: input price."
    )
    reasoning_price = money_field(null=True, blank=True, help_text="Per 1M reasoning tokens; empty: output.")
    image_input_price = money_field(null=True, blank=True, help_text="Per 1M image tokens; empty: input.")
    # per unit
    request_price = money_field(default=0, help_text="Per request.")
    web_search_price = money_field(default=0, help_text="Per web search.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        db_table = "llmlog_model_price"
        ordering = ["model_name", "kind", "-effective_from"]
        constraints = [
            models.UniqueConstraint(
                fields=["model_name", "kind", "effective_from"], name="model_price_unique_effective"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.model_name} ({self.kind}) from {self.effective_from:%Y-%m-%d}"


def hash_api_key(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


class ApiKey(models.Model):
    """A key for the REST API. Only its sha256 is stored; the key itself is shown once."""

    PREFIX = "llk_"

    class Role(models.TextChoices):
        OWNER = "owner"
        ADMIN = "admin"
        MEMBER = "member"
        READER = "reader"

    class Scope(models.TextChoices):
        INGEST = "ingest"
        READ = "read"

    name = models.CharField(max_length=100, blank=True, default="")
    # What an operator sees to tell keys apart: the first characters of the key.
    key_prefix = models.CharField(max_length=16, editable=False)
    key_hash = models.CharField(max_length=64, unique=True, editable=False)
    userorgid = models.CharField(
        max_length=64, blank=True, default="", help_text="The org this key belongs to; empty: platform-wide."
    )
    role = models.CharField(max_length=8, choices=Role.choices, default=Role.MEMBER)
    scopes = models.JSONField(default=list, help_text='A list of "ingest" and "read".')
    created_at = models.DateTimeField(auto_now_add=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = "llmlog_api_key"
        verbose_name = "API key"

    def __str__(self) -> str:
        owner = self.userorgid or "platform"
        return f"{self.key_prefix}… ({owner}, {self.role})"

    @property
    def is_platform(self) -> bool:
        return not self.userorgid

    @property
    def is_revoked(self) -> bool:
        return self.revoked_at is not None

    def assign_new_secret(self) -> str:
        """Give this key a new secret; returns the raw key, which is not kept anywhere."""
        raw = self.PREFIX + secrets.token_urlsafe(32)
        self.key_hash = hash_api_key(raw)
        self.key_prefix = raw[:12]
        return raw


class UsageAudit(models.Model):
    """One operator's change to a usage record (an edit or a delete): who, when, before and after.

    Written in the edit's own transaction, so a change without its audit row cannot exist. Plain values,
    no foreign key: the row outlives a deleted record.
    """

    class Action(models.TextChoices):
        UPDATE = "update"
        DELETE = "delete"

    usage_id = models.UUIDField()
    transno = models.CharField(max_length=128)
    userorgid = models.CharField(max_length=64, blank=True, default="")
    action = models.CharField(max_length=8, choices=Action.choices)
    actor = models.CharField(max_length=150, help_text="The key or user that made the change.")
    at = models.DateTimeField(default=timezone.now)
    before = models.JSONField(help_text="The changed fields before (a delete: the whole record).")
    after = models.JSONField(null=True, blank=True, help_text="The changed fields after; empty for a delete.")

    class Meta:
        db_table = "llmusage_audit"
        ordering = ["-at"]
        indexes = [
            # The audit trail of one record (its admin page, an operator's question about a charge).
            models.Index(fields=["usage_id", "-at"], name="llmusage_audit_usage_idx"),
            # The admin's list, newest first.
            models.Index(fields=["-at"], name="llmusage_audit_at_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.action} {self.transno} by {self.actor} at {self.at:%Y-%m-%d %H:%M:%S}"


class JobRun(models.Model):
    """One run of a periodic job (backup, posting, retries, rollups): what the admin shows on-call."""

    class Status(models.TextChoices):
        RUNNING = "running"
        SUCCEEDED = "succeeded"
        FAILED = "failed"

    job = models.CharField(max_length=64)
    started_at = models.DateTimeField(default=timezone.now)
    finished_at = models.DateTimeField(null=True, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.RUNNING)
    counts = models.JSONField(default=dict, blank=True, help_text="What the run did, e.g. {moved: 1000}.")
    error = models.TextField(blank=True, default="")

    class Meta:
        db_table = "llmlog_job_run"
        ordering = ["-started_at"]
        indexes = [
            # The admin's "last runs of each job".
            models.Index(fields=["job", "-started_at"], name="job_run_job_started_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.job} at {self.started_at:%Y-%m-%d %H:%M:%S} ({self.status})"

    @property
    def duration_seconds(self) -> float | None:
        if self.finished_at is None:
            return None
        return (self.finished_at - self.started_at).total_seconds()


class UsageAll(UsageRecord):
    """The read model: every usage record, hot or history (the `llmusage_all` view, UNION ALL).

    Every query about a time range reads this, so a record answers the same before and after the
    nightly move. Read-only: writes go to LLMUsage; the backup moves rows to LLMUsageHistory.
    """

    backup_time = models.DateTimeField(null=True, blank=True)
    source = models.CharField(max_length=8, help_text="hot | history")

    class Meta:
        managed = False
        db_table = "llmusage_all"
        verbose_name = "LLM usage (hot and history)"
        verbose_name_plural = "LLM usage (hot and history)"


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
