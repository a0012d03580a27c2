"""The operator's admin: usage and history (big tables: bounded counts, indexed filters and search, CSV
export), model prices, API keys, job runs, and the failed-postings page (accounting's admin plus "Retry
now"). The dashboard is llmlog.dashboard; the shared pieces for big lists are core.admin and
llmlog.csv_export."""

from collections import Counter

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.html import format_html, format_html_join
from django.utils.text import Truncator

from accounting.admin import AccountingFailureAdmin
from accounting.models import AccountingFailure
from core.admin import (
    BigTableAdmin,
    ExactValueFilter,
    IndexedValuesFilter,
    TextSafeAdmin,
    date_range_filter,
    reasons,
    too_many,
)
from core.formats import money_html, time_text
from llmlog.csv_export import CsvColumn, CsvExportMixin
from llmlog.edits import UsageImmutable, usage_delete, usage_update
from llmlog.keys import api_key_revoke
from llmlog.models import AccountingStatus, ApiKey, JobRun, LLMUsage, LLMUsageHistory, ModelPrice, UsageAudit
from llmlog.posting import retry_failed_accounting
from llmlog.selectors.search import usage_search

admin.site.site_header = admin.site.site_title = "llmlog"
admin.site.index_title = "Usage, accounting and keys"
# The lists need the width (usage, failures and accounts fit 1440 px only without it, tests/e2e); every
# page is one click from the index through the breadcrumbs.
admin.site.enable_nav_sidebar = False

USAGE_FIELDSETS = (
    (None, {"fields": ("id", "transno", "taskid", "status", "code", "error_message", "retry_times")}),
    ("Time", {"fields": ("use_date", "use_time", "responsed_seconds", "finish_seconds", "created_at")}),
    (
        "Who",
        {
            "fields": (
                "userorgid",
                "userid",
                "username",
                "token_id",
                "token_name",
                "token_key_hash",
                "group",
                "request_ip",
                "feature",
            )
        },
    ),
    (
        "Model",
        {
            "fields": (
                "model_name",
                "llmid",
                "ownerid",
                "provider",
                "provider_type",
                "channel_id",
                "is_local",
                "is_global_provider",
                "endpoint",
                "is_stream",
            )
        },
    ),
    (
        "Tokens",
        {
            "fields": (
                "input_tokens",
                "output_tokens",
                "cached_tokens",
                "cache_creation_tokens",
                "reasoning_tokens",
                "image_input_tokens",
                "web_search_count",
                "total_tokens",
                "usages",
            )
        },
    ),
    ("Money", {"fields": ("amount", "cost", "currency", "price")}),
    ("Accounting", {"fields": ("accounting_status", "accounted_at")}),
    ("Request and response, tags", {"fields": ("ioinfo", "metadata"), "classes": ("collapse",)}),
)
USAGE_FIELDS = tuple(name for _, options in USAGE_FIELDSETS for name in options["fields"])
# The change page of a hot record lists its audit trail (llmlog.edits writes it).
AUDIT_SHOWN = 20
# What an operator may correct on a record not yet accounted (as PATCH /api/llmusage/{id}/): token
# counts are what the provider reported, and the rest is identity or bookkeeping.
USAGE_EDITABLE_FIELDS = (
    "amount",
    "cost",
    "model_name",
    "llmid",
    "ownerid",
    "userid",
    "username",
    "token_name",
    "group",
    "feature",
    "status",
    "code",
    "error_message",
)
USAGE_CSV_COLUMNS = (
    CsvColumn("use_time"),
    CsvColumn("use_date"),
    CsvColumn("transno"),
    CsvColumn("userorgid"),
    CsvColumn("userid"),
    CsvColumn("username"),
    CsvColumn("token_name"),
    CsvColumn("model_name"),
    CsvColumn("llmid"),
    CsvColumn("ownerid"),
    CsvColumn("provider_type"),
    CsvColumn("status"),
    CsvColumn("code"),
    CsvColumn("accounting_status"),
    # Every token kind (TOKEN_COUNT_FIELDS), each summed on the TOTAL row.
    CsvColumn("input_tokens", total=True),
    CsvColumn("output_tokens", total=True),
    CsvColumn("cached_tokens", total=True),
    CsvColumn("cache_creation_tokens", total=True),
    CsvColumn("reasoning_tokens", total=True),
    CsvColumn("image_input_tokens", total=True),
    CsvColumn("web_search_count", total=True),
    CsvColumn("total_tokens", total=True),
    CsvColumn("amount", total=True),
    CsvColumn("cost", total=True),
    CsvColumn("currency"),
    CsvColumn("error_message"),
)


class UsageAdminBase(CsvExportMixin, BigTableAdmin):
    """Usage records, hot or history: millions of rows, so every filter and search uses an index."""

    # What fits 1440 px beside the filters without scrolling sideways (tests/e2e/test_admin_layout.py);
    # the transno is searched for and shown on the record's page.
    list_display = (
        "when",
        "userorgid",
        "userid",
        "model_name",
        "tokens",
        "amount_display",
        "cost_display",
        "status",
        "accounting_status",
    )
    list_filter = (
        # From-to days on use_time: served by the (-use_time) and (userorgid, -use_time) indexes.
        ("use_time", date_range_filter("use time")),
        "status",
        "accounting_status",
        # Their values come from the (model_name, -use_time) and (userorgid, -use_time) indexes.
        ("model_name", IndexedValuesFilter),
        ("userorgid", IndexedValuesFilter),
    )
    # The search is llmlog.selectors.search.usage_search: exact matches on indexed columns (transno, id,
    # userid, username, userorgid, model_name, token_name) or words of the error message (trigrams).
    search_fields = ("=transno", "=userid", "=username", "=userorgid", "=model_name", "=token_name")
    search_help_text = (
        "Exact transno, id, userid, username, userorgid, model_name or token_name; or words of the error."
    )
    ordering = ("-use_time",)
    fieldsets = USAGE_FIELDSETS
    csv_columns = USAGE_CSV_COLUMNS

    @admin.display(description="time", ordering="use_time")
    def when(self, record: LLMUsage) -> str:
        return time_text(record.use_time)

    @admin.display(description="tokens", ordering="total_tokens")
    def tokens(self, record: LLMUsage) -> str:
        return format_html('<span class="num">{}</span>', f"{record.total_tokens:,}")

    @admin.display(description="amount", ordering="amount")
    def amount_display(self, record: LLMUsage) -> str:
        return money_html(record.amount)

    @admin.display(description="cost", ordering="cost")
    def cost_display(self, record: LLMUsage) -> str:
        return money_html(record.cost)

    def search_matches(self, queryset: QuerySet, term: str) -> QuerySet:
        return usage_search(queryset=queryset, keyword=term)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # usage is what the gateway reported


@admin.register(LLMUsage)
class LLMUsageAdmin(UsageAdminBase):
    """The hot table. A record not yet accounted can be corrected or deleted (llmlog.edits); an
    accounted one is part of the ledger and is read-only."""

    fieldsets = (*USAGE_FIELDSETS, ("Audit", {"fields": ("audit_trail",)}))

    def get_readonly_fields(self, request: HttpRequest, obj: LLMUsage | None = None) -> tuple:
        return (*(name for name in USAGE_FIELDS if name not in USAGE_EDITABLE_FIELDS), "audit_trail")

    @admin.display(description="changes")
    def audit_trail(self, usage: LLMUsage) -> str:
        """The operators' changes to this record, newest first (llmusage_audit_usage_idx)."""
        rows = list(UsageAudit.objects.filter(usage_id=usage.pk).order_by("-at")[:AUDIT_SHOWN])
        if not rows:
            return "none"
        return format_html(
            '<ul>{}</ul><a href="{}?usage_id={}">every change of this record</a>',
            format_html_join(
                "",
                '<li><a href="{}">{} by {} at {}</a>: {}</li>',
                (
                    (
                        reverse("admin:llmlog_usageaudit_change", args=[row.pk]),
                        row.action,
                        row.actor,
                        row.at.isoformat(timespec="seconds"),
                        ", ".join(sorted(row.before)),
                    )
                    for row in rows
                ),
            ),
            reverse("admin:llmlog_usageaudit_changelist"),
            usage.pk,
        )

    def get_actions(self, request: HttpRequest) -> dict:
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)  # a bulk delete would bypass llmlog.edits' checks
        return actions

    def has_change_permission(self, request: HttpRequest, obj: LLMUsage | None = None) -> bool:
        accounted = obj is not None and obj.accounting_status == AccountingStatus.ACCOUNTED
        return not accounted and super().has_change_permission(request, obj)

    def has_delete_permission(self, request: HttpRequest, obj: LLMUsage | None = None) -> bool:
        accounted = obj is not None and obj.accounting_status == AccountingStatus.ACCOUNTED
        return not accounted and super().has_delete_permission(request, obj)

    def save_model(self, request: HttpRequest, obj: LLMUsage, form: forms.ModelForm, change: bool) -> None:
        changes = {name: form.cleaned_data[name] for name in form.changed_data}
        if not changes:
            return
        try:
            usage_update(id=obj.pk, changes=changes, actor=request.user.get_username())
        except UsageImmutable as exc:
            self.message_user(request, f"Not changed: {exc}", level=messages.ERROR)

    def delete_model(self, request: HttpRequest, obj: LLMUsage) -> None:
        try:
            usage_delete(id=obj.pk, actor=request.user.get_username())
        except UsageImmutable as exc:
            self.message_user(request, f"Not deleted: {exc}", level=messages.ERROR)


@admin.register(LLMUsageHistory)
class LLMUsageHistoryAdmin(UsageAdminBase):
    """Accounted records of past days: read-only."""

    list_display = (*UsageAdminBase.list_display, "backup_time")
    fieldsets = (*USAGE_FIELDSETS, ("Backup", {"fields": ("backup_time",)}))
    csv_columns = (*USAGE_CSV_COLUMNS, CsvColumn("backup_time"))

    def has_change_permission(self, request: HttpRequest, obj: LLMUsageHistory | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: LLMUsageHistory | None = None) -> bool:
        return False


@admin.register(ModelPrice)
class ModelPriceAdmin(TextSafeAdmin):
    list_display = ("model_name", "kind", "effective_from", "currency", "input_price", "output_price")
    list_filter = ("kind", "currency")
    search_fields = ("model_name",)


class ApiKeyForm(forms.ModelForm):
    scopes = forms.MultipleChoiceField(choices=ApiKey.Scope.choices, widget=forms.CheckboxSelectMultiple)

    class Meta:
        model = ApiKey
        fields = ("name", "userorgid", "role", "scopes")


@admin.register(ApiKey)
class ApiKeyAdmin(TextSafeAdmin):
    form = ApiKeyForm
    list_display = ("key_prefix", "name", "userorgid", "role", "scopes", "created_at", "revoked_at")
    list_filter = ("role", "revoked_at")
    search_fields = ("name", "userorgid", "key_prefix")
    actions = ("revoke",)

    def has_change_permission(self, request, obj=None) -> bool:
        return obj is None and super().has_change_permission(request)

    def save_model(self, request, obj: ApiKey, form, change: bool) -> None:
        obj._new_raw_key = obj.assign_new_secret()  # never stored: response_add shows it, then it is gone
        super().save_model(request, obj, form, change)

    def response_add(self, request, obj: ApiKey, post_url_continue=None) -> HttpResponse:
        """The new key, shown once on this page: not in a message (Django keeps messages in a cookie),
        not in a redirect's URL, not cached."""
        context = {
            **self.admin_site.each_context(request),
            "title": "New API key",
            "opts": self.opts,
            "key": obj,
            "raw_key": obj._new_raw_key,
        }
        response = TemplateResponse(request, "admin/llmlog/apikey/created.html", context)
        response["Cache-Control"] = "no-store"
        return response

    @admin.action(description="Revoke the selected keys")
    def revoke(self, request, queryset) -> None:
        for key in queryset:
            api_key_revoke(key=key)
        self.message_user(request, f"Revoked {queryset.count()} key(s).")


@admin.register(UsageAudit)
class UsageAuditAdmin(TextSafeAdmin):
    """Who changed or deleted which usage record, when, and the fields before and after: read-only."""

    list_display = ("at", "action", "transno", "userorgid", "actor", "usage", "fields_changed")
    list_filter = ("action",)
    # Exact: the trail of one record, org or operator.
    search_fields = ("=transno", "=userorgid", "=actor")
    search_help_text = "Exact transno, userorgid or actor; ?usage_id=<uuid> for one record's trail."
    date_hierarchy = "at"
    ordering = ("-at",)
    list_per_page = 50
    fields = ("at", "action", "usage_id", "transno", "userorgid", "actor", "before", "after")
    readonly_fields = fields

    def lookup_allowed(self, lookup: str, value: str, request: HttpRequest | None = None) -> bool:
        return lookup == "usage_id" or super().lookup_allowed(lookup, value, request)

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    @admin.display(description="usage record")
    def usage(self, row: UsageAudit) -> str:
        if row.action == UsageAudit.Action.DELETE:
            return f"{row.usage_id} (deleted)"
        url = reverse("admin:llmlog_llmusage_change", args=[row.usage_id])
        return format_html('<a href="{}">{}</a>', url, row.usage_id)

    @admin.display(description="fields")
    def fields_changed(self, row: UsageAudit) -> str:
        return "whole record" if row.action == UsageAudit.Action.DELETE else ", ".join(sorted(row.before))


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


# --- failed postings ------------------------------------------------------------------------------


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
