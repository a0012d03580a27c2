"""The failed-postings page: accounting's admin plus "Retry now" (retrying reads usage rows, which is
why the page is registered on llmlog's side)."""

from collections import Counter

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html

from accounting.admin.failures import AccountingFailureAdmin
from accounting.models import AccountingFailure
from core.admin import (
    ExactValueFilter,
    IndexedValuesFilter,
    date_range_filter,
    reasons,
    too_many,
)
from llmlog.csv_export import CsvColumn, CsvExportMixin
from llmlog.models import LLMUsage
from llmlog.posting import retry_failed_accounting

ACCOUNTING_FAILURE_CSV_COLUMNS = (
    CsvColumn("last_failed_at"),
    CsvColumn("first_failed_at"),
    CsvColumn("use_date"),
    CsvColumn("transno"),
    CsvColumn("usage_id"),
    CsvColumn("userorgid"),
    CsvColumn("userid"),
    CsvColumn("ownerid"),
    CsvColumn("llmid"),
    CsvColumn("model_name"),
    CsvColumn("amount", total=True),
    CsvColumn("cost", total=True),
    CsvColumn("error_code"),
    CsvColumn("error_message"),
    CsvColumn("attempts"),
    CsvColumn("next_retry_at"),
    CsvColumn("status"),
    CsvColumn("resolved_at"),
    CsvColumn("resolved_by"),
)
# What "Retry now" counts as a success: posted now, nothing to post (skipped), or posted already.
RETRY_SUCCESSES = {"accounted", "skipped", "already_accounted"}
# Why a retried failure did not post, as the action's message says it (a failure that failed again
# is counted by its new error code).
RETRY_FAILURE_REASONS = {"busy": "busy (being posted, or pending again)", "missing": "usage record gone"}


@admin.register(AccountingFailure)
class AccountingFailureRetryAdmin(CsvExportMixin, AccountingFailureAdmin):
    """The failed-postings page: accounting's AccountingFailureAdmin (list, search by transno, resolve,
    ignore) plus what needs llmlog: "Retry now" (it reads usage rows), the from-to picker and the org
    drop-down of the big lists, a bounded count, CSV export, and a link to the usage record."""

    list_filter = (
        # From-to days on use_date: acct_failed_use_date_idx (or the org's (userorgid, use_date)).
        ("use_date", date_range_filter("use date")),
        "status",
        "error_code",
        # Its values come from acct_failed_org_date_idx, one probe each.
        ("userorgid", IndexedValuesFilter),
        ("userid", ExactValueFilter),
        ("model_name", ExactValueFilter),
    )
    csv_columns = ACCOUNTING_FAILURE_CSV_COLUMNS
    change_list_template = "admin/accounting/accountingfailure/change_list.html"  # the CSV one, styled
    actions = ("retry_now", *AccountingFailureAdmin.actions)

    def get_fieldsets(self, request: HttpRequest, obj: AccountingFailure | None = None) -> list:
        (name, options), *rest = super().get_fieldsets(request, obj)
        return [(name, {**options, "fields": (*options["fields"], "usage_record")}), *rest]

    def get_readonly_fields(self, request: HttpRequest, obj: AccountingFailure | None = None) -> list[str]:
        return [*super().get_readonly_fields(request, obj), "usage_record"]

    @admin.display(description="usage record")
    def usage_record(self, failure: AccountingFailure) -> str:
        """The record in llmusage and its accounting status (a failed record never moves to history)."""
        status = (
            LLMUsage.objects.filter(pk=failure.usage_id).values_list("accounting_status", flat=True).first()
        )
        if status is None:
            return "not in llmusage (deleted?)"
        url = reverse("admin:llmlog_llmusage_change", args=[failure.usage_id])
        return format_html('<a href="{}">{}</a> ({})', url, failure.usage_id, status)

    @admin.action(description="Retry now", permissions=["change"])
    def retry_now(self, request: HttpRequest, queryset: QuerySet[AccountingFailure]) -> None:
        if too_many(self, request, queryset):
            return
        result = retry_failed_accounting(
            ids=list(queryset.values_list("pk", flat=True)), by=request.user.get_username()
        )
        outcomes = result.outcomes
        succeeded = sum(1 for outcome in outcomes.values() if outcome in RETRY_SUCCESSES)
        failed = Counter(RETRY_FAILURE_REASONS[o] for o in outcomes.values() if o in RETRY_FAILURE_REASONS)
        # A failure that failed again is counted by its new error code, e.g. "2 insufficient_balance".
        failed_again = [pk for pk, outcome in outcomes.items() if outcome == "failed"]
        failed.update(
            AccountingFailure.objects.filter(pk__in=failed_again).values_list("error_code", flat=True)
        )
        message = f"Retried {len(outcomes)} failure(s): {succeeded} succeeded, {failed.total()} failed"
        self.message_user(
            request, f"{message}{reasons(failed)}.", level=messages.WARNING if failed else messages.SUCCESS
        )
