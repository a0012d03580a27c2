"""The usage filters of the design, one FilterSet for every read (native API, history, dialects, stats).

Parameters (all optional, all GET): `start_time` (inclusive) and `end_time` (exclusive) as ISO 8601 or
unix seconds / milliseconds, `use_date`, `userid`, `userorgid`, `ownerid`, `llmid`, `model_name`,
`token_name`, `group`, `feature`, `status`, `accounting_status`, `min_amount`, `max_amount`, and
`ordering`. A malformed value or an unknown choice is a 400 naming the parameter: `UsageFilter`'s form
errors are keyed by parameter name, and `apply_usage_filters` raises `InvalidFilter` with them.

The time range is half-open, [start_time, end_time), so consecutive ranges (days, hours) never count a
record twice and the hourly rollups line up with it.
"""

import re
from collections.abc import Mapping
from datetime import UTC, date, datetime, time
from typing import Any

import django_filters
from django import forms
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db.models import QuerySet
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime
from django_filters.rest_framework import DjangoFilterBackend
from drf_spectacular.utils import extend_schema_field

from core.text import text_problem
from llmlog.models import AccountingStatus, UsageAll, UsageStatus
from llmlog.queries import (
    ALL,
    DEFAULT_ORDERING,
    ORDERING_CHOICES,
    InvalidFilter,
    Ordering,
    UsageQuery,
)
from llmlog.times import unix_seconds

# Times and days a filter may name. Nothing is stored outside them (ingest takes 2000 on), so a bound
# past them finds nothing or everything, as it should; the margins keep every computation on a bound
# (the next hour or day, a time zone's offset) inside the range of a datetime, which past them would
# be an OverflowError instead of an answer.
FILTER_DAY_MIN = date(1900, 1, 1)
FILTER_DAY_MAX = date(9999, 12, 30)
# ASCII digits only, matched whole (fullmatch): `\d` takes any script's digits and `$` a trailing newline.
_NUMBER = re.compile(r"-?[0-9]+(\.[0-9]+)?")


def clean_text(value: str, *, name: str) -> str:
    """`value` when a query can take it; otherwise InvalidFilter naming `name`."""
    problem = text_problem(value)
    if problem:
        raise InvalidFilter({name: [problem]})
    return value


# A path parameter as the API documents it: Django's `pk` kwarg is `{id}` in every route's URL and in
# the OpenAPI paths (drf-spectacular's SCHEMA_COERCE_PATH_PK; every model here has its key named id), so
# an error names what the client sent, never the view's internal kwarg.
PATH_PARAMETER_NAMES = {"pk": "id"}


def unstorable_params(params: Mapping[str, Any], path_params: Mapping[str, Any] | None = None) -> None:
    """Raise InvalidFilter naming every query parameter (a QueryDict: each of its values) or path
    parameter (by its documented name) that no query can hold. An entry point calls this once, before
    reading any of them."""
    values = [*(params.lists() if hasattr(params, "lists") else ((k, [v]) for k, v in params.items()))]
    values += [
        (PATH_PARAMETER_NAMES.get(name, name), [str(value)]) for name, value in (path_params or {}).items()
    ]
    errors = {}
    for name, texts in values:
        problem = next(filter(None, (text_problem(str(text)) for text in texts)), None)
        if problem:
            errors[name] = [problem]
    if errors:
        raise InvalidFilter(errors)


def text_validator(value: str) -> None:
    """text_problem as a form validator (every CharFilter of UsageFilter has it)."""
    problem = text_problem(value)
    if problem:
        raise forms.ValidationError(problem, code="unstorable_text")


def parse_time(value: str | int | float, *, name: str = "time", unit: str = "auto") -> datetime:
    """An aware datetime from ISO 8601 (a date alone is its midnight), unix seconds or milliseconds.

    `unit` is "auto" (milliseconds from 1e12 on: llmlog.times), "s" or "ms" for dialects that fix the unit.
    A time without an offset is read in TIME_ZONE. Raises InvalidFilter naming `name`.
    """
    text = str(value).strip()
    if not text:
        raise InvalidFilter({name: ["Empty time."]})
    if _NUMBER.fullmatch(text):
        try:
            parsed = datetime.fromtimestamp(unix_seconds(float(text), unit=unit), tz=UTC)
        except (OverflowError, OSError, ValueError):
            raise InvalidFilter({name: [f"{text!r} is out of range as a unix timestamp."]}) from None
    else:
        try:
            parsed = parse_datetime(text.replace(" ", "T", 1) if "T" not in text else text)
            if parsed is None:
                day = parse_date(text)
                parsed = datetime.combine(day, time()) if day else None
        except ValueError:
            parsed = None
        if parsed is None:
            raise InvalidFilter(
                {name: [f"{text!r} is not a time: use ISO 8601 or unix seconds or milliseconds."]}
            )
    if not FILTER_DAY_MIN <= parsed.date() <= FILTER_DAY_MAX:
        message = f"{text!r} is out of range: from {FILTER_DAY_MIN} to {FILTER_DAY_MAX}."
        raise InvalidFilter({name: [message]})
    if timezone.is_naive(parsed):
        parsed = timezone.make_aware(parsed, timezone.get_current_timezone())
    return parsed


class TimeField(forms.Field):
    """ISO 8601 or unix seconds / milliseconds."""

    def to_python(self, value: Any) -> datetime | None:
        if value in (None, ""):
            return None
        try:
            return parse_time(value, name="value")
        except InvalidFilter as exc:
            # The message quotes the value, which may hold a "%": passed as a parameter, never formatted.
            raise forms.ValidationError("%(message)s", params={"message": exc.errors["value"][0]}) from None


@extend_schema_field(
    {
        "type": "string",
        "description": "ISO 8601 (no offset: TIME_ZONE), or unix seconds or milliseconds. "
        "start_time is inclusive, end_time exclusive.",
        "example": "2026-11-20T00:00:00Z",
    }
)
class TimeFilter(django_filters.Filter):
    field_class = TimeField


def _choice_help(choices: type) -> str:
    return "One of: " + ", ".join(choices.values) + "."


class UsageFilter(django_filters.FilterSet):
    """The design's filters over usage records (works on UsageAll, LLMUsage and LLMUsageHistory)."""

    start_time = TimeFilter(
        field_name="use_time",
        lookup_expr="gte",
        label="Records from this time on (inclusive): ISO 8601, or unix seconds or milliseconds.",
    )
    end_time = TimeFilter(
        field_name="use_time",
        lookup_expr="lt",
        label="Records before this time (exclusive): ISO 8601, or unix seconds or milliseconds.",
    )
    use_date = django_filters.DateFilter(
        field_name="use_date",
        label="Day of use in TIME_ZONE, YYYY-MM-DD.",
        input_formats=["%Y-%m-%d"],  # ISO only, as the schema says (not Django's 11/20/2026)
        validators=[MinValueValidator(FILTER_DAY_MIN), MaxValueValidator(FILTER_DAY_MAX)],
    )
    userid = django_filters.CharFilter(field_name="userid")
    userorgid = django_filters.CharFilter(field_name="userorgid")
    ownerid = django_filters.CharFilter(field_name="ownerid", label="Org that owns the model.")
    llmid = django_filters.CharFilter(field_name="llmid")
    model_name = django_filters.CharFilter(field_name="model_name")
    token_name = django_filters.CharFilter(field_name="token_name")
    group = django_filters.CharFilter(field_name="group")
    feature = django_filters.CharFilter(field_name="feature")
    status = django_filters.ChoiceFilter(
        field_name="status", choices=UsageStatus.choices, label=_choice_help(UsageStatus)
    )
    accounting_status = django_filters.ChoiceFilter(
        field_name="accounting_status",
        choices=AccountingStatus.choices,
        label=_choice_help(AccountingStatus),
    )
    min_amount = django_filters.NumberFilter(field_name="amount", lookup_expr="gte", label="amount >= this.")
    max_amount = django_filters.NumberFilter(field_name="amount", lookup_expr="lte", label="amount <= this.")
    ordering = django_filters.ChoiceFilter(
        choices=ORDERING_CHOICES,
        method="filter_ordering",
        label=f"Sort order; default {DEFAULT_ORDERING}. Ties are broken by id.",
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Every text filter, present and future, refuses what no query can hold (one place, not one
        # per field). Filters are copied per instance, so this never touches the class's.
        for filter_ in self.filters.values():
            if isinstance(filter_, django_filters.CharFilter):
                validators = filter_.extra.setdefault("validators", [])
                if text_validator not in validators:
                    validators.append(text_validator)

    def filter_ordering(self, queryset: QuerySet, name: str, value: str) -> QuerySet:
        return Ordering.parse(value).apply(queryset)

    def filter_queryset(self, queryset: QuerySet) -> QuerySet:
        queryset = super().filter_queryset(queryset)
        if not self.form.cleaned_data.get("ordering"):
            queryset = Ordering.parse(None).apply(queryset)
        return queryset


# The native filters of a time range: rates are over the last minute, whatever the range.
TIME_FILTERS = ("start_time", "end_time", "use_date")
# Native filter -> the UsageQuery field it sets (the equality filters keep their names).
QUERY_FIELDS = {"start_time": "start", "end_time": "end", "use_date": "day"}


def usage_filter_values(*, params: Mapping[str, Any]) -> dict[str, Any]:
    """Validate `params` (a QueryDict or a dict of parameter -> value); return the cleaned values that
    were given. Raises InvalidFilter naming each bad parameter."""
    if not any(params.get(name) for name in UsageFilter.base_filters):
        return {}
    filterset = UsageFilter(data=params, queryset=UsageAll.objects.none())
    if not filterset.is_valid():
        raise InvalidFilter(filterset.form.errors)
    return {name: value for name, value in filterset.form.cleaned_data.items() if value not in (None, "")}


def native_query(*, params: Mapping[str, Any], org: str = "", source: str = ALL) -> UsageQuery:
    """The UsageQuery the native filter parameters stand for (unknown parameters are ignored: they
    belong to the caller: page, cursor, keyword). Raises InvalidFilter naming each bad parameter."""
    values = usage_filter_values(params=params)
    ordering = Ordering.parse(values.pop("ordering", None))
    fields = {QUERY_FIELDS.get(name, name): value for name, value in values.items()}
    return UsageQuery(org=org, source=source, ordering=ordering, **fields)


def apply_usage_filters(*, queryset: QuerySet, params: Mapping[str, Any]) -> QuerySet:
    """`queryset` filtered and ordered by `params` (the parameters above, e.g. request.query_params).

    Raises InvalidFilter naming each bad parameter. Unknown parameters are ignored (they belong to the
    caller: page, cursor, a dialect's own names).
    """
    query = native_query(params=params)
    return query.ordering.apply(queryset.filter(query.condition()))


class UsageFilterBackend(DjangoFilterBackend):
    """django-filter's backend, for UsageFilter's OpenAPI parameters; the filtering itself is the
    native UsageQuery's (a get-item is not filtered at all)."""

    def filter_queryset(self, request, queryset: QuerySet, view) -> QuerySet:
        if getattr(view, "action", None) == "retrieve":
            return queryset
        query = native_query(params=request.query_params)
        return query.ordering.apply(queryset.filter(query.condition()))
