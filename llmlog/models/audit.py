"""What operators changed on usage records, and what the jobs did."""

from django.db import models
from django.utils import timezone


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
