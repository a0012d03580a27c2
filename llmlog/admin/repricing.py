"""The re-pricings page: each re-pricing with its report per org and model, its per-record CSV, and the
action "Apply" (thin callers of `llmlog.repricing`; registered on llmlog's side because applying
re-prices uncharged usage rows). Re-pricings are made with `manage.py reprice` or the API; they are an
audit trail, so nobody edits or deletes one here."""

from collections import Counter

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, StreamingHttpResponse
from django.shortcuts import get_object_or_404
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from accounting.ledger import BalanceOverflow, LedgerError
from accounting.models import Repricing
from core.admin import TextSafeAdmin, reasons
from core.formats import money_html
from llmlog.repricing import RepricingStale, repricing_apply
from llmlog.repricing_report import REPORT_COLUMNS, repricing_records_csv

MONEY_COLUMNS = {"old_amount", "new_amount", "delta_amount", "old_cost", "new_cost", "delta_cost"}


@admin.register(Repricing)
class RepricingAdmin(TextSafeAdmin):
    list_display = (
        "id",
        "start",
        "end",
        "userorgid",
        "model_name",
        "status",
        "records",
        "changed",
        "delta_amount_display",
        "delta_cost_display",
        "created_by",
        "created_at",
        "applied_at",
    )
    list_filter = ("status",)
    search_fields = ("=userorgid", "=model_name")
    list_select_related = ()
    readonly_fields = (
        "start",
        "end",
        "userorgid",
        "model_name",
        "status",
        "records",
        "changed",
        "delta_amount",
        "delta_cost",
        "report",
        "records_csv",
        "created_by",
        "created_at",
        "applied_by",
        "applied_at",
    )
    fields = readonly_fields
    actions = ("apply",)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # made by `manage.py reprice` or POST /api/repricings/, with their report

    def has_delete_permission(self, request: HttpRequest, obj: Repricing | None = None) -> bool:
        return False  # the audit trail of adjustments posted to the ledger

    def get_urls(self) -> list:
        csv_view = self.admin_site.admin_view(self.records_csv_view)
        name = f"{self.opts.app_label}_{self.opts.model_name}_records_csv"
        return [path("<int:pk>/records.csv", csv_view, name=name), *super().get_urls()]

    def records_csv_view(self, request: HttpRequest, pk: int) -> StreamingHttpResponse:
        repricing = get_object_or_404(Repricing, pk=pk)
        if not self.has_view_permission(request, repricing):
            raise PermissionDenied
        return repricing_records_csv(repricing=repricing)

    @admin.display(description="delta amount", ordering="delta_amount")
    def delta_amount_display(self, obj: Repricing) -> SafeString:
        return money_html(obj.delta_amount)

    @admin.display(description="delta cost", ordering="delta_cost")
    def delta_cost_display(self, obj: Repricing) -> SafeString:
        return money_html(obj.delta_cost)

    @admin.display(description="report per org and model")
    def report(self, obj: Repricing) -> SafeString:
        head = format_html_join("", "<th>{}</th>", ((name.replace("_", " "),) for name in REPORT_COLUMNS))
        body = format_html_join(
            "",
            "<tr>{}</tr>",
            (
                (
                    format_html_join(
                        "", "<td>{}</td>", ((self._cell(name, row[name]),) for name in REPORT_COLUMNS)
                    ),
                )
                for row in obj.summary
            ),
        )
        return format_html("<table><thead><tr>{}</tr></thead><tbody>{}</tbody></table>", head, body)

    @staticmethod
    def _cell(name: str, value: object) -> object:
        return money_html(value) if name in MONEY_COLUMNS else value

    @admin.display(description="records")
    def records_csv(self, obj: Repricing) -> SafeString:
        url = reverse(f"admin:{self.opts.app_label}_{self.opts.model_name}_records_csv", args=[obj.pk])
        return format_html('<a href="{}">Download the per-record CSV ({} records)</a>', url, obj.changed)

    @admin.action(
        description="Apply the selected re-pricings (post their adjustments)", permissions=["change"]
    )
    def apply(self, request: HttpRequest, queryset: QuerySet[Repricing]) -> None:
        applied, already, failed = 0, 0, Counter()
        for repricing in queryset.order_by("id"):
            try:
                _, now = repricing_apply(repricing_id=repricing.pk, applied_by=request.user.get_username())
            except RepricingStale:
                failed["stale: run a new one"] += 1
                continue
            except (LedgerError, BalanceOverflow) as exc:
                failed[str(exc)] += 1
                continue
            applied += now
            already += not now
        self.message_user(request, f"Applied {applied} re-pricing(s); {already} were applied already.")
        if failed:
            self.message_user(
                request, f"{sum(failed.values())} not applied{reasons(failed)}.", level=messages.ERROR
            )
