"""Monthly statements in the admin: the closed months (read-only: a closed period never changes) and a
print-ready page of each (no asset from the internet; the browser's print makes the PDF). They read the
stored snapshot only; months are closed by `close_period` and its job (llmlog.statements). The account
admin links to an account's statements from its change page (templates/admin/accounting/account/
change_form.html).
"""

from datetime import timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import Http404, HttpRequest
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html

from accounting.models import Statement
from core.admin import ExactSearchAdmin, TextSafeAdmin
from core.formats import money_html, money_text, time_text


@admin.register(Statement)
class StatementAdmin(ExactSearchAdmin, TextSafeAdmin):
    list_display = (
        "org",
        "month_display",
        "opening",
        "charges_display",
        "topups_display",
        "adjustments_display",
        "closing",
        "requests",
        "closed_at_display",
        "print_link",
    )
    list_filter = ("month", "currency")
    list_select_related = ("account",)
    search_fields = ("=account__org",)
    search_help_text = "Exact org id."
    ordering = ("-month", "account__org")
    fields = (
        "account",
        "month",
        "time_zone",
        "currency",
        "period_start",
        "period_end",
        "opening_balance",
        "charges",
        "topups",
        "adjustments",
        "closing_balance",
        "requests",
        "closed_at",
        "closed_by",
        "opening_before",
        "opening_line_id",
        "closing_line_id",
        "print_link",
    )
    readonly_fields = fields

    def search_matches(self, queryset: QuerySet[Statement], term: str) -> QuerySet[Statement]:
        return queryset.filter(account__org=term)

    # A closed period is immutable: statements are written by the close only.
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Statement | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Statement | None = None) -> bool:
        return False

    def get_urls(self) -> list[URLPattern]:
        printable = path(
            "<int:statement_id>/print/",
            self.admin_site.admin_view(self.print_view),
            name="accounting_statement_print",
        )
        return [printable, *super().get_urls()]

    def print_view(self, request: HttpRequest, statement_id: int) -> TemplateResponse:
        statement = get_object_or_404(Statement.objects.select_related("account"), pk=statement_id)
        if not self.has_view_permission(request, statement):
            raise PermissionDenied
        return TemplateResponse(request, "admin/accounting/statement/print.html", printable(statement))

    @admin.display(description="org", ordering="account__org")
    def org(self, statement: Statement) -> str:
        return statement.account.org

    @admin.display(description="month", ordering="month")
    def month_display(self, statement: Statement) -> str:
        return statement.month_text

    @admin.display(description="opening")
    def opening(self, statement: Statement) -> str:
        return money_html(statement.opening_balance, currency=statement.currency)

    @admin.display(description="charges")
    def charges_display(self, statement: Statement) -> str:
        return money_html(statement.charges)

    @admin.display(description="top-ups")
    def topups_display(self, statement: Statement) -> str:
        return money_html(statement.topups)

    @admin.display(description="adjustments")
    def adjustments_display(self, statement: Statement) -> str:
        return money_html(statement.adjustments)

    @admin.display(description="closing")
    def closing(self, statement: Statement) -> str:
        return money_html(statement.closing_balance, currency=statement.currency)

    @admin.display(description="closed", ordering="closed_at")
    def closed_at_display(self, statement: Statement) -> str:
        return time_text(statement.closed_at)

    @admin.display(description="statement")
    def print_link(self, statement: Statement) -> str:
        if statement.pk is None:
            return "-"
        url = reverse("admin:accounting_statement_print", args=[statement.pk])
        return format_html('<a href="{}">print</a>', url)


def printable(statement: Statement) -> dict[str, Any]:
    """The page's values, every amount already in the shared money format."""
    data, currency = statement.data, statement.currency
    zone = ZoneInfo(statement.time_zone)
    if data.get("org") is None:
        raise Http404("The statement has no snapshot.")
    last_day = (statement.period_end.astimezone(zone) - timedelta(microseconds=1)).date()

    def money(value: str | Decimal) -> str:
        return money_text(Decimal(value), currency=currency)

    return {
        "title": f"Statement {data['org']} {data['month']}",
        "statement": statement,
        "org": data["org"],
        "month": data["month"],
        "first_day": statement.period_start.astimezone(zone).date(),
        "last_day": last_day,
        "time_zone": statement.time_zone,
        "figures": [
            ("Opening balance", money(data["opening_balance"])),
            ("Charges (usage)", money(-Decimal(data["charges"]))),
            ("Top-ups", money(data["topups"])),
            ("Adjustments", money(data["adjustments"])),
            ("Closing balance", money(data["closing_balance"])),
        ],
        "requests": f"{data['requests']:,}",
        "by_model": [
            {
                "model_name": row["model_name"] or "(record purged)",
                "requests": f"{row['requests']:,}",
                "input_tokens": f"{row['input_tokens']:,}",
                "output_tokens": f"{row['output_tokens']:,}",
                "charges": money(row["charges"]),
            }
            for row in data["by_model"]
        ],
        "by_day": [
            {
                "date": row["date"] or "(record purged)",
                "requests": f"{row['requests']:,}",
                "charges": money(row["charges"]),
            }
            for row in data["by_day"]
        ],
        "charges": money(data["charges"]),
        "closed_at": time_text(statement.closed_at),
        "changelist": reverse("admin:accounting_statement_changelist"),
    }
