"""The usage tables (llmage's names): the hot table, its history and the view over both."""

from django.db import models
from django.db.models import F, Q
from django.utils import timezone
from django.utils.deconstruct import deconstructible
from uuid_utils.compat import uuid7

from core.money import money_field

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
            # Provider cost drift (llmlog.selectors.drift) reads only the records with both costs, by time:
            # most gateways report no provider cost, and the report then reads nothing else.
            models.Index(
                fields=["-use_time"],
                condition=Q(cost__isnull=False, provider_cost__isnull=False),
                name="llmusage_drift_time_idx",
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
            models.Index(
                fields=["-use_time"],
                condition=Q(cost__isnull=False, provider_cost__isnull=False),
                name="llmusage_hist_drift_time_idx",
            ),
            # What a given night's backup moved (an operator's audit of one run).
            models.Index(fields=["backup_time"], name="llmusage_hist_backup_idx"),
        ]


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
