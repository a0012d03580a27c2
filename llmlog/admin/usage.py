"""The usage and history pages (big tables: bounded counts, indexed filters and search, CSV export;
corrections of records not yet accounted) and the audit trail of those corrections."""

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html, format_html_join

from core.admin import (
    BigTableAdmin,
    IndexedValuesFilter,
    TextSafeAdmin,
    date_range_filter,
)
from core.formats import money_html, time_text
from llmlog.csv_export import CsvColumn, CsvExportMixin
from llmlog.edits import UsageImmutable, usage_delete, usage_update
from llmlog.models import TOKEN_COUNT_FIELDS, AccountingStatus, LLMUsage, LLMUsageHistory, UsageAudit
from llmlog.selectors.search import usage_search

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
        {"fields": (*TOKEN_COUNT_FIELDS, "total_tokens", "usages")},
    ),
    ("Money", {"fields": ("amount", "cost", "provider_cost", "currency", "price")}),
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
    CsvColumn("provider_cost", total=True),  # what the gateway or provider reported; empty: not reported
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
