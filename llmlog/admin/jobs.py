"""The runs of the scheduled jobs, read-only."""

from django.contrib import admin
from django.utils.text import Truncator

from core.admin import (
    TextSafeAdmin,
)
from llmlog.models import JobRun


@admin.register(JobRun)
class JobRunAdmin(TextSafeAdmin):
    # The last runs of each job: filter by job; newest first.
    list_display = ("job", "started_at", "duration", "status", "what_it_did", "error_summary")
    list_filter = ("job", "status")
    search_fields = ("=job", "error")
    date_hierarchy = "started_at"
    ordering = ("-started_at",)
    list_per_page = 50

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    @admin.display(description="duration (s)")
    def duration(self, run: JobRun) -> str:
        seconds = run.duration_seconds
        return "running" if seconds is None else f"{seconds:.1f}"

    @admin.display(description="counts")
    def what_it_did(self, run: JobRun) -> str:
        return ", ".join(f"{name} {value}" for name, value in run.counts.items()) or "-"

    @admin.display(description="error")
    def error_summary(self, run: JobRun) -> str:
        return Truncator(run.error).chars(120)
