"""The failed-postings page, the ledger's half: what it lists, search by transno, resolve and ignore.

Not registered here: llmlog's admin (`llmlog.admin.failures.AccountingFailureRetryAdmin`) subclasses
`AccountingFailureAdmin` with "Retry now" (which reads usage rows), the big-table filters and CSV export,
because accounting never imports llmlog. There is one failures admin, registered once, there.
"""

from collections import Counter

from django.contrib import admin, messages
from django.db.models import Q, QuerySet
from django.http import HttpRequest
from django.utils.html import format_html
from django.utils.text import Truncator

from accounting.failures import FailureStateError, failure_ignore, failure_resolve
from accounting.models import AccountingFailure
from core.admin import BigListAdmin, ExactSearchAdmin, as_uuid, reasons, too_many
from core.formats import money_html, time_text

# How much of an error message the failures list shows; the full text is in the tooltip and on the row.
SHORT_ERROR_CHARS = 60


def outcome_message(*, verb: str, done: int, failed: Counter[str]) -> str:
    """ "Resolved 3 failure(s); 1 failed (1 already resolved)." — the reasons, most frequent first."""
    return f"{verb} {done} failure(s); {failed.total()} failed{reasons(failed)}."


class AccountingFailureAdmin(ExactSearchAdmin, BigListAdmin):
    """The failed-postings page ("failed_accounting.ui"), the ledger's half: what it lists, search by
    transno, resolve and ignore (who and when are recorded). Not registered here: see the module's
    docstring. The rows are written by posting only; an operator acts on them through the actions."""

    # What an operator needs at 3 am, inside 1440 px beside the filters (tests/e2e); the user, model,
    # cost and first failure are on the row's page and in the CSV export.
    list_display = (
        "last_failed",
        "transno",
        "userorgid",
        "error_code",
        "attempts",
        "last_error",
        "amount_display",
        "state",
    )
    list_display_links = ("transno",)
    search_fields = ("=transno", "=usage_id")
    search_help_text = "Exact transno (or the usage record's id)."
    # Newest failure first, as llmage's get_failed_accounting_records; the filters' indexes (use_date,
    # userorgid + use_date) narrow the rows to sort.
    ordering = ("-last_failed_at", "-id")
    fieldsets = (
        (None, {"fields": ("transno", "usage_id", "status", "resolved_by", "resolved_at")}),
        (
            "Error",
            {"fields": ("error_code", "error_message", "attempts", "first_failed_at", "last_failed_at")},
        ),
        ("Retry", {"fields": ("next_retry_at",)}),
        (
            "Record",
            {
                "fields": (
                    "use_date",
                    "userorgid",
                    "userid",
                    "ownerid",
                    "llmid",
                    "model_name",
                    "amount",
                    "cost",
                )
            },
        ),
    )
    actions = ("resolve", "ignore")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # failures are recorded by posting

    def has_delete_permission(self, request: HttpRequest, obj: AccountingFailure | None = None) -> bool:
        return False  # the record of what failed stays: resolve or ignore it

    def get_readonly_fields(self, request: HttpRequest, obj: AccountingFailure | None = None) -> list[str]:
        return [field.name for field in AccountingFailure._meta.fields]

    def search_matches(self, queryset: QuerySet, term: str) -> QuerySet:
        """Exact and case-sensitive, so the transno index (or usage_id's unique one) answers it."""
        uuid = as_uuid(term)
        return queryset.filter(Q(transno=term) | Q(usage_id=uuid) if uuid is not None else Q(transno=term))

    @admin.display(description="last failed", ordering="last_failed_at")
    def last_failed(self, failure: AccountingFailure) -> str:
        return time_text(failure.last_failed_at)

    @admin.display(description="first failed", ordering="first_failed_at")
    def first_failed(self, failure: AccountingFailure) -> str:
        return time_text(failure.first_failed_at)

    @admin.display(description="status", ordering="status")
    def state(self, failure: AccountingFailure) -> str:
        """Open, or who closed it and when."""
        if failure.status == AccountingFailure.Status.OPEN:
            return failure.get_status_display()
        return format_html(
            "{}<br><small>by {} at {}</small>",
            failure.get_status_display(),
            failure.resolved_by or "?",
            time_text(failure.resolved_at) if failure.resolved_at else "?",
        )

    @admin.display(description="amount", ordering="amount")
    def amount_display(self, failure: AccountingFailure) -> str:
        return money_html(failure.amount)

    @admin.display(description="last error")
    def last_error(self, failure: AccountingFailure) -> str:
        short = Truncator(failure.error_message).chars(SHORT_ERROR_CHARS)
        return format_html('<span title="{}">{}</span>', failure.error_message, short)

    @admin.action(description="Resolve (settled outside the ledger)", permissions=["change"])
    def resolve(self, request: HttpRequest, queryset: QuerySet[AccountingFailure]) -> None:
        if too_many(self, request, queryset):
            return
        done, failed = 0, Counter()
        for failure in queryset:
            if failure.status == AccountingFailure.Status.RESOLVED:
                failed["already resolved"] += 1
                continue
            failure_resolve(failure=failure, by=request.user.get_username())
            done += 1
        self._report(request, outcome_message(verb="Resolved", done=done, failed=failed), failed)

    @admin.action(description="Ignore (never post; the scheduled retry skips them)", permissions=["change"])
    def ignore(self, request: HttpRequest, queryset: QuerySet[AccountingFailure]) -> None:
        if too_many(self, request, queryset):
            return
        done, failed = 0, Counter()
        for failure in queryset:
            if failure.status == AccountingFailure.Status.IGNORED:
                failed["already ignored"] += 1
                continue
            try:
                failure_ignore(failure=failure, by=request.user.get_username())
                done += 1
            except FailureStateError:
                failed["already resolved"] += 1
        self._report(request, outcome_message(verb="Ignored", done=done, failed=failed), failed)

    def _report(self, request: HttpRequest, message: str, failed: Counter[str]) -> None:
        self.message_user(request, message, level=messages.WARNING if failed else messages.SUCCESS)
