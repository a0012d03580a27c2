"""Admin pieces both apps build on, for tables of up to millions of rows.

- `BoundedCountPaginator` never COUNTs a whole table (templates/admin/pagination.html reads
  `is_estimate`); `BigListAdmin` uses it, with no facet counts and no date hierarchy (its DISTINCT over
  dates scans the whole table); `BigTableAdmin` adds exact, index-served search.
- `TextSafeChangeList` / `TextSafeAdmin`: a filter value no query can hold (NUL, a lone surrogate) is left
  out with a message instead of reaching the database.
- Search terms: `clean_search_term` and `ExactSearchAdmin` (the strip / refuse / empty preamble, once).
- Filters: `IndexedValuesFilter` (a column's values from its index), `ExactValueFilter` (a text box),
  `date_range_filter` (the from-to picker).
- Actions: `too_many` (refuse a bulk action past MAX_ACTION_ROWS), `reasons` (why some rows failed).

This module imports no model of either app.
"""

from collections import Counter
from collections.abc import Iterator
from typing import Any
from uuid import UUID

from django.contrib import admin, messages
from django.contrib.admin.options import IncorrectLookupParameters
from django.contrib.admin.views.main import ChangeList
from django.core.paginator import Paginator
from django.db import connections, models
from django.db.models import Q, QuerySet
from django.http import HttpRequest
from django.utils.functional import cached_property
from rangefilter.filters import DateRangeFilterBuilder

from core.text import text_problem

# Values listed by an IndexedValuesFilter (and the dashboard's org select): past this many the list is
# cut; the search box and the filter's URL parameter still take any value.
MAX_FILTER_VALUES = 500
# An action over more rows than this is refused: it runs in the request, row by row, and "select all"
# on a big list would otherwise time out half done. Narrow the filters instead (or use the API).
MAX_ACTION_ROWS = 10_000


# --- counting -------------------------------------------------------------------------------------


class BoundedCountPaginator(Paginator):
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


# --- text no query can hold -----------------------------------------------------------------------


def admin_problem(value: str) -> str | None:
    """text_problem as the admin's messages say it, inside a sentence: "must not contain NUL characters"."""
    problem = text_problem(value)
    return problem[0].lower() + problem[1:].rstrip(".") if problem else None


class TextSafeChangeList(ChangeList):
    """A changelist whose filters take no value a query cannot hold (NUL, a lone surrogate): the filter
    is left out and a message names it, so the operator sees the list and why it is not narrowed, not a
    database error. With `strict` (a CSV export, which must not widen silently) it is a bad lookup. The
    search box needs nothing: Django's search form refuses NUL itself."""

    strict = False

    def get_filters(self, request: HttpRequest):
        for name, values in self.get_filters_params().items():
            values = values if isinstance(values, list) else [values]
            problem = next(filter(None, (admin_problem(str(value)) for value in values)), None)
            if not problem:
                continue
            shown = name.replace("\x00", "")
            if self.strict:
                raise IncorrectLookupParameters(f"{shown}: {problem}")
            messages.error(request, f"Filter {shown!r} ignored: {problem}.")
            self.filter_params.pop(name, None)
            self.params.pop(name, None)
        return super().get_filters(request)


class TextSafeAdmin(admin.ModelAdmin):
    """Every admin of both apps: filters through TextSafeChangeList."""

    def get_changelist(self, request: HttpRequest, **kwargs) -> type[ChangeList]:
        return TextSafeChangeList


class BigListAdmin(TextSafeAdmin):
    """A list of up to millions of rows: bounded count, no facet counts, no date hierarchy."""

    paginator = BoundedCountPaginator
    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER
    date_hierarchy = None
    list_per_page = 50


# --- search ---------------------------------------------------------------------------------------


def as_uuid(term: str) -> UUID | None:
    try:
        return UUID(term)
    except ValueError:
        return None


def clean_search_term(term: str) -> str | None:
    """The term of an exact search, stripped; None when it cannot match anything (NUL or a lone
    surrogate is not text)."""
    term = term.strip()
    return None if text_problem(term) else term


class ExactSearchAdmin(admin.ModelAdmin):
    """Search through `search_matches(queryset, term)`, given a clean, non-empty term: a term no row
    can hold finds nothing, an empty one leaves the list as it is."""

    def search_matches(self, queryset: QuerySet, term: str) -> QuerySet:
        raise NotImplementedError

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet, search_term: str
    ) -> tuple[QuerySet, bool]:
        term = clean_search_term(search_term)
        if term is None:
            return queryset.none(), False
        if not term:
            return queryset, False
        return self.search_matches(queryset, term), False


class BigTableAdmin(ExactSearchAdmin, BigListAdmin):
    """A big list searched by exact matches on `search_fields` (case-sensitive, so a b-tree index
    answers it; Django's `=field` would compare UPPER() of both sides, which no index serves)."""

    search_help_text = "Exact match (case-sensitive)."

    def search_matches(self, queryset: QuerySet, term: str) -> QuerySet:
        match = Q()
        for field in self.search_fields:
            match |= Q(**{field.lstrip("=^@"): term})
        return queryset.filter(match)


# --- filters --------------------------------------------------------------------------------------


def distinct_values(
    *, model: type[models.Model], column: str, limit: int = MAX_FILTER_VALUES, using: str | None = None
) -> list[Any]:
    """The distinct values of `column` (ascending, at most `limit`), read from an index that starts
    with the column: one index probe per value (a "loose index scan", which PostgreSQL 15 does not do
    by itself), instead of a DISTINCT that reads every row. Without such an index each probe scans
    the table: use Django's AllValuesFieldListFilter for small tables. `using`: the database alias
    (default: the model's)."""
    connection = connections[using or model.objects.db]
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


class ExactValueFilter(admin.FieldListFilter):
    """A text box for a column with too many values to list and no index to list them from (userid,
    model_name on the failures page): the rows whose column equals what is typed. Empty: no filter."""

    template = "admin/accounting/exact_value_filter.html"

    def __init__(self, field, request, params, model, model_admin, field_path) -> None:
        self.lookup_kwarg = field_path
        values = [value.strip() for value in params.get(field_path, [])]
        if not any(values) or any(text_problem(value) for value in values):
            params.pop(field_path, None)  # nothing typed (or not text): no filter
            values = []
        else:
            params[field_path] = values
        self.lookup_val = values[-1] if values else ""
        super().__init__(field, request, params, model, model_admin, field_path)

    def expected_parameters(self) -> list[str]:
        return [self.lookup_kwarg]

    def choices(self, changelist) -> Iterator[dict[str, Any]]:
        # One "choice": the form's state. The other parameters of the list ride along as hidden fields.
        yield {
            "selected": bool(self.lookup_val),
            "value": self.lookup_val,
            "parameter": self.lookup_kwarg,
            "hidden": [
                (name, value) for name, value in changelist.params.items() if name != self.lookup_kwarg
            ],
            "clear_query_string": changelist.get_query_string(remove=[self.lookup_kwarg]),
        }


def date_range_filter(title: str) -> type[admin.FieldListFilter]:
    """A from-to date picker (django-admin-rangefilter) on a date or datetime column: days in the
    operator's time zone, both ends included. Filters with `<field>__range__gte` / `__lte`."""
    return DateRangeFilterBuilder(title=title)


# --- actions --------------------------------------------------------------------------------------


def too_many(model_admin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet) -> bool:
    """Refuse (with a message) an action over more than MAX_ACTION_ROWS rows."""
    if queryset[: MAX_ACTION_ROWS + 1].count() <= MAX_ACTION_ROWS:
        return False
    model_admin.message_user(
        request,
        f"Nothing done: select at most {MAX_ACTION_ROWS:,} rows at once (narrow the filters).",
        level=messages.ERROR,
    )
    return True


def reasons(failed: Counter[str]) -> str:
    """ " (2 no_account, 1 already resolved)": most frequent first, then by name; "" when none."""
    ordered = sorted(failed.items(), key=lambda item: (-item[1], item[0]))
    return " (" + ", ".join(f"{count} {reason}" for reason, count in ordered) + ")" if failed else ""
