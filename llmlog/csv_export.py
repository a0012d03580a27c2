"""CSV export of any admin list (usage, history, accounting failures).

Streamed: rows are read with `.iterator(chunk_size=...)` (a server-side cursor on PostgreSQL) and
written as they come, so memory stays flat whatever the list's size. Times are in the operator's time
zone (the current one: TIME_ZONE unless activated otherwise), with their offset. The last row holds the
totals of the columns marked `total` (tokens, amount, cost), summed while streaming. A text cell that
a spreadsheet would read as a formula (starting with `=`, `+`, `-`, `@`, a tab or a carriage return) is
neutralised with a leading `'` (OWASP's "CSV injection"); numbers are ours and are written as they are.

`CsvExportMixin` puts it on a ModelAdmin: an "Export CSV" button on the changelist that exports the list
as filtered and searched, and an action that exports the selected rows.
"""

import csv
import json
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import date, datetime, tzinfo
from decimal import Decimal
from typing import Any

from django.contrib import admin
from django.contrib.admin.options import IncorrectLookupParameters
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponseBadRequest, StreamingHttpResponse
from django.urls import path
from django.utils import timezone

FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r")
# Rows fetched per round trip: big enough that the fetches cost little, small enough (a few MB of
# rows) that memory stays flat.
CHUNK_SIZE = 2000
TOTAL_LABEL = "TOTAL"


@dataclass(frozen=True)
class CsvColumn:
    """One column: the model field (or `values_list` name) it reads, its header, and whether the
    totals row sums it."""

    field: str
    header: str = ""
    total: bool = False

    @property
    def title(self) -> str:
        return self.header or self.field


def neutralise(text: str) -> str:
    """`text`, made inert for a spreadsheet when it would start a formula."""
    return "'" + text if text.startswith(FORMULA_TRIGGERS) else text


def csv_cell(value: Any, *, tz: tzinfo) -> str:
    """One value as CSV text: times in `tz` with their offset, JSON as JSON, text neutralised."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return timezone.localtime(value, tz).isoformat(sep=" ") if timezone.is_aware(value) else str(value)
    if isinstance(value, date | int | float | Decimal | uuid.UUID):
        return str(value)
    if isinstance(value, dict | list):
        return neutralise(json.dumps(value, ensure_ascii=False, default=str))
    return neutralise(str(value))


class _Echo:
    """A file-like object whose write returns what it was given: csv.writer then formats one row."""

    def write(self, value: str) -> str:
        return value


def csv_lines(
    *,
    queryset: QuerySet,
    columns: Iterable[CsvColumn],
    tz: tzinfo | None = None,
    chunk_size: int = CHUNK_SIZE,
) -> Iterator[str]:
    """The CSV text of `queryset`, line by line: a header, one line per row, then the totals line."""
    columns = list(columns)
    tz = tz or timezone.get_current_timezone()
    writer = csv.writer(_Echo())
    yield "\ufeff"  # a byte-order mark: spreadsheets then read the file as UTF-8
    yield writer.writerow([column.title for column in columns])
    totals: dict[int, Any] = {index: 0 for index, column in enumerate(columns) if column.total}
    rows = 0
    fields = [column.field for column in columns]
    for row in queryset.values_list(*fields).iterator(chunk_size=chunk_size):
        rows += 1
        for index in totals:
            totals[index] += row[index] or 0
        yield writer.writerow([csv_cell(value, tz=tz) for value in row])
    last = [csv_cell(totals[index], tz=tz) if index in totals else "" for index in range(len(columns))]
    last[0] = f"{TOTAL_LABEL} ({rows} row{'' if rows == 1 else 's'})"
    yield writer.writerow(last)


def csv_response(
    *, queryset: QuerySet, columns: Iterable[CsvColumn], filename: str, tz: tzinfo | None = None
) -> StreamingHttpResponse:
    response = StreamingHttpResponse(
        csv_lines(queryset=queryset, columns=columns, tz=tz), content_type="text/csv; charset=utf-8"
    )
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


class CsvExportMixin:
    """For a ModelAdmin: "Export CSV" of the changelist as filtered and searched (a button in the
    object tools, at `<changelist>/export-csv/?<the list's query string>`), and the action "Export
    selected rows to CSV". Set `csv_columns`; needs view permission."""

    csv_columns: tuple[CsvColumn, ...] = ()
    change_list_template = "admin/llmlog/change_list_csv.html"

    def get_urls(self) -> list:
        info = self.opts.app_label, self.opts.model_name
        urls = [
            path(
                "export-csv/",
                self.admin_site.admin_view(self.export_csv_view),
                name="{}_{}_export_csv".format(*info),
            )
        ]
        return urls + super().get_urls()

    def get_actions(self, request: HttpRequest) -> dict:
        actions = super().get_actions(request)
        if self.has_view_permission(request):
            actions["export_csv"] = self.get_action("export_csv")
        return actions

    def csv_filename(self) -> str:
        return f"{self.opts.db_table}-{timezone.localtime():%Y%m%d-%H%M%S}.csv"

    def csv_export(self, queryset: QuerySet) -> StreamingHttpResponse:
        return csv_response(queryset=queryset, columns=self.csv_columns, filename=self.csv_filename())

    def export_csv_view(self, request: HttpRequest) -> StreamingHttpResponse | HttpResponseBadRequest:
        if not self.has_view_permission(request):
            raise PermissionDenied
        try:
            queryset = changelist_queryset(self, request)
        except IncorrectLookupParameters as exc:
            return HttpResponseBadRequest(f"Invalid filter in the query string: {exc}")
        return self.csv_export(queryset)

    @admin.action(description="Export selected rows to CSV")
    def export_csv(self, request: HttpRequest, queryset: QuerySet) -> StreamingHttpResponse:
        return self.csv_export(queryset)


def changelist_queryset(model_admin: admin.ModelAdmin, request: HttpRequest) -> QuerySet:
    """The queryset the changelist shows for `request` (its filters, search and ordering), without
    counting or fetching a page. Raises IncorrectLookupParameters on a bad filter."""
    changelist_class = model_admin.get_changelist(request)

    class QuerysetOnly(changelist_class):
        strict = True  # a filter that cannot apply is an error, never a wider export (TextSafeChangeList)

        def get_results(self, request: HttpRequest) -> None:
            pass  # no count and no page: only the queryset is wanted

    changelist = QuerysetOnly(
        request,
        model_admin.model,
        model_admin.get_list_display(request),
        model_admin.get_list_display_links(request, model_admin.get_list_display(request)),
        model_admin.get_list_filter(request),
        model_admin.date_hierarchy,
        model_admin.get_search_fields(request),
        model_admin.get_list_select_related(request),
        model_admin.list_per_page,
        model_admin.list_max_show_all,
        model_admin.list_editable,
        model_admin,
        model_admin.get_sortable_by(request),
        model_admin.search_help_text,
    )
    return changelist.queryset
