"""Admin pieces for tables of millions of rows, reused by every list of usage-like records.

`BigTableAdmin` never runs an unbounded COUNT (its paginator counts at most `bound + 1` rows, facet
counts are off, and there is no date hierarchy: its DISTINCT over dates scans the whole table), and
searches by exact matches that the indexes answer. `IndexedValuesFilter` lists the values of a column
from its index (a few probes, not a DISTINCT over every row); `date_range_filter` is the from-to picker.

This module imports no model of either app, so `accounting`'s admin can build on it too.
"""

from typing import Any

from django.contrib import admin
from django.core.paginator import Paginator
from django.db import connections, models
from django.db.models import Q, QuerySet
from django.http import HttpRequest
from django.utils.functional import cached_property
from rangefilter.filters import DateRangeFilterBuilder

# Values listed by an IndexedValuesFilter (and the dashboard's org select): past this many the list is
# cut; the search box and the filter's URL parameter still take any value.
MAX_FILTER_VALUES = 500


class EstimatedCountPaginator(Paginator):
    """Never COUNT millions of rows for a page: count at most `bound + 1` rows (`COUNT(*)` over a
    `LIMIT`), and say "more than `bound`" past it. Pages reach as far as the bound."""

    bound = 10_000

    @cached_property
    def count(self) -> int:
        return self.object_list[: self.bound + 1].count()

    @property
    def is_estimate(self) -> bool:
        """True when the list is longer than the bound: `count` then is a floor, not the count."""
        return self.count > self.bound

    @property
    def bound_display(self) -> str:
        return f"{self.bound:,}"


def distinct_values(*, model: type[models.Model], column: str, limit: int = MAX_FILTER_VALUES) -> list[Any]:
    """The distinct values of `column` (ascending, at most `limit`), read from an index that starts
    with the column: one index probe per value (a "loose index scan", which PostgreSQL 15 does not do
    by itself), instead of a DISTINCT that reads every row. Without such an index each probe scans
    the table: use Django's AllValuesFieldListFilter for small tables."""
    connection = connections[model.objects.db]
    quote = connection.ops.quote_name
    table, name = quote(model._meta.db_table), quote(model._meta.get_field(column).column)
    sql = f"""
        WITH RECURSIVE found(value, n) AS (
            SELECT MIN({name}), 1 FROM {table}
            UNION ALL
            SELECT (SELECT MIN({name}) FROM {table} WHERE {name} > found.value), found.n + 1
            FROM found WHERE found.value IS NOT NULL AND found.n < %s
        )
        SELECT value FROM found WHERE value IS NOT NULL
    """  # identifiers come from the model's meta, quoted; the limit is a parameter
    with connection.cursor() as cursor:
        cursor.execute(sql, [limit])
        return [row[0] for row in cursor.fetchall()]


class IndexedValuesFilter(admin.AllValuesFieldListFilter):
    """A list filter over a column's values, shown as a drop-down (orgs and models run to hundreds),
    with the values read by `distinct_values`: needs an index that starts with the column."""

    template = "admin/llmlog/select_filter.html"

    def __init__(self, field, request, params, model, model_admin, field_path) -> None:
        super().__init__(field, request, params, model, model_admin, field_path)
        values = distinct_values(model=model, column=field.name)
        # The selected value stays in the list even when it is past the limit.
        selected = [value for value in self.lookup_val or [] if value not in values]
        self.lookup_choices = sorted({*values, *selected})

    def choices(self, changelist) -> Any:
        for choice in super().choices(changelist):
            if choice["display"] == "":
                choice["display"] = "(empty)"
            yield choice


def date_range_filter(title: str) -> type[admin.FieldListFilter]:
    """A from-to date picker (django-admin-rangefilter) on a date or datetime column: days in the
    operator's time zone, both ends included. Filters with `<field>__range__gte` / `__lte`."""
    return DateRangeFilterBuilder(title=title)


def exact_search(*, queryset: QuerySet, fields: tuple[str, ...], term: str) -> QuerySet:
    """`queryset` where one of `fields` equals `term` (case-sensitive, so a b-tree index answers it;
    Django's `=field` would compare UPPER() of both sides, which no index serves)."""
    term = term.strip()
    if not term:
        return queryset
    match = Q()
    for field in fields:
        match |= Q(**{field.lstrip("=^@"): term})
    return queryset.filter(match)


class BigTableAdmin(admin.ModelAdmin):
    """A ModelAdmin for a table of millions of rows: bounded counts, no facets, exact search."""

    paginator = EstimatedCountPaginator
    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER
    date_hierarchy = None
    list_per_page = 50
    search_help_text = "Exact match (case-sensitive)."

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet, search_term: str
    ) -> tuple[QuerySet, bool]:
        return exact_search(queryset=queryset, fields=tuple(self.search_fields), term=search_term), False
