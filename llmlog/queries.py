"""Which usage records a read is about, as one frozen value: `UsageQuery`.

Every entry point builds one from its own parameters (the native filters in llmlog.filters, each
compatibility dialect, the dashboard) and hands it to the selectors (llmlog.selectors), which own every
rule about it: how it filters, whether a count may be estimated, whether the hourly rollups can answer
it, how deep a page may reach. Two entry points that mean the same records build equal values.

Times are aware datetimes, the range half-open: [start, end). `org` is the caller's scope ("" = every
org, a platform key); `userorgid` is a filter the caller chose. Both hold when both are given.
"""

from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from datetime import date, datetime
from decimal import Decimal
from typing import Any, Protocol

from django.db.models import F, Q, QuerySet, Value
from django.db.models.functions import Coalesce

# Page numbers (the native page, OneUptime's skip, new-api's p, AI Proxy's page) reach at most this many
# records deep. A page number is an OFFSET: the database reads and throws away every record before the
# page, so a deep page costs in proportion to its depth. Deeper, a client follows a cursor (native) or
# narrows its time range (every dialect has one), which the (userorgid, use_time) indexes answer at any
# depth.
MAX_PAGE_DEPTH = 10_000

# Where the records are read: hot and history alike (the llmusage_all view), or history only.
ALL = "all"
HISTORY = "history"

# Orderings a client may ask for. Each sorts by one column then by id (unique, so the order is total and
# a keyset cursor can resume after any row). use_time is indexed on both tables, alone and per org; the
# others sort the filtered rows (bounded by MAX_PAGE_DEPTH).
ORDERING_FIELDS = ("use_time", "amount", "cost", "total_tokens")
DEFAULT_ORDERING = "-use_time"
ORDERING_CHOICES = [(f, f) for f in ORDERING_FIELDS] + [(f"-{f}", f"-{f}") for f in ORDERING_FIELDS]
# Nullable sort columns read as 0 (not yet priced sorts with free), so a keyset comparison is total.
NULLABLE_ORDERING_FIELDS = frozenset({"amount", "cost"})


class InvalidFilter(ValueError):
    """Bad filter input. `errors` maps each bad parameter to its messages."""

    def __init__(self, errors: Mapping[str, list[str]]) -> None:
        self.errors = {name: list(messages) for name, messages in errors.items()}
        super().__init__("; ".join(f"{name}: {' '.join(msgs)}" for name, msgs in self.errors.items()))


class Sort(Protocol):
    def apply(self, queryset: QuerySet) -> QuerySet: ...


@dataclass(frozen=True)
class Ordering:
    """A validated `ordering`: the column, its direction, and the sort expression (`sort_key`)."""

    field: str
    descending: bool

    @classmethod
    def parse(cls, value: str | None) -> "Ordering":
        value = (value or DEFAULT_ORDERING).strip()
        field = value.removeprefix("-")
        if field not in ORDERING_FIELDS:
            choices = ", ".join(name for name, _ in ORDERING_CHOICES)
            raise InvalidFilter({"ordering": [f"{value!r} is not one of: {choices}."]})
        return cls(field=field, descending=value.startswith("-"))

    @property
    def value(self) -> str:
        return f"-{self.field}" if self.descending else self.field

    @property
    def sort_alias(self) -> str:
        return f"_sort_{self.field}" if self.field in NULLABLE_ORDERING_FIELDS else self.field

    def apply(self, queryset: QuerySet) -> QuerySet:
        if self.field in NULLABLE_ORDERING_FIELDS:
            zero = Value(Decimal(0), output_field=queryset.model._meta.get_field(self.field))
            queryset = queryset.annotate(**{self.sort_alias: Coalesce(F(self.field), zero)})
        sign = "-" if self.descending else ""
        return queryset.order_by(f"{sign}{self.sort_alias}", f"{sign}id")


NEWEST_FIRST = Ordering(field="use_time", descending=True)


@dataclass(frozen=True)
class SortTerms:
    """An order a dialect spells itself (OneUptime's `sort`): order_by() terms, ties broken in them."""

    terms: tuple[Any, ...]

    def apply(self, queryset: QuerySet) -> QuerySet:
        return queryset.order_by(*self.terms)


# Equality filters: the query's field -> the column it compares.
EQUALITY_COLUMNS = {
    "userid": "userid",
    "userorgid": "userorgid",
    "ownerid": "ownerid",
    "llmid": "llmid",
    "model_name": "model_name",
    "token_name": "token_name",
    "group": "group",
    "feature": "feature",
    "username": "username",
    "channel_id": "channel_id",
    "status": "status",
    "accounting_status": "accounting_status",
}
# What the hourly rollups carry: their dimensions and the time range (and the caller's org). Not `day`
# (use_date): it is the day in the TIME_ZONE a record was stamped in, which need not be today's, and the
# rollups know only UTC hours; a use_date query reads its rows (llmlog.selectors.rollup_reads says why).
ROLLUP_FIELDS = frozenset({"org", "start", "end", "userorgid", "model_name", "status"})
# Never filters: where the records are read and in what order.
NOT_FILTERS = frozenset({"source", "ordering"})
# A status no record has: a dialect's filter that can match nothing (new-api's log types that are not
# usage, OneUptime's "Insufficient Balance") is this, and finds nothing.
NO_STATUS = ""


@dataclass(frozen=True)
class UsageQuery:
    """Which usage records, in what order. None (or empty) means "not filtered by this"."""

    org: str = ""
    source: str = ALL
    start: datetime | None = None  # inclusive
    end: datetime | None = None  # exclusive
    day: date | None = None  # use_date, the day in TIME_ZONE
    ids: tuple[Any, ...] | None = None
    userid: str | None = None
    userorgid: str | None = None
    ownerid: str | None = None
    llmid: str | None = None
    model_name: str | None = None
    token_name: str | None = None
    group: str | None = None
    feature: str | None = None
    username: str | None = None
    channel_id: str | None = None
    status: str | None = None
    accounting_status: str | None = None
    min_amount: Decimal | None = None
    max_amount: Decimal | None = None
    token_key_hashes: tuple[str, ...] | None = None
    keyword: str | None = None
    # What else the keyword may name, in a dialect's own terms (new-api's log type, a content prefix).
    keyword_terms: tuple[Q, ...] | None = None
    where: Q | None = None  # a dialect's own condition (OneUptime's operators), beyond the fields above
    ordering: Sort = field(default=NEWEST_FIRST)

    def given(self) -> frozenset[str]:
        """The names of the fields that narrow the records (org included; source and ordering not)."""
        names = {f.name for f in fields(self) if getattr(self, f.name) is not None} - NOT_FILTERS
        return frozenset(names if self.org else names - {"org"})

    @property
    def is_unfiltered(self) -> bool:
        """Every record of every org (of its source): the one read whose count may be estimated."""
        return not self.given()

    @property
    def finds_nothing(self) -> bool:
        return self.status == NO_STATUS

    @property
    def rollups_can_answer(self) -> bool:
        """Whether the hourly rollups carry everything this query narrows by: the org, model, status and
        a time range, nothing else (and hot and history alike, which they sum)."""
        return self.source == ALL and self.given() <= ROLLUP_FIELDS

    def without_time(self) -> "UsageQuery":
        """The same records at any time (rates are over the last minute, whatever the range)."""
        return replace(self, start=None, end=None, day=None)

    def condition(self) -> Q:
        """The query's filters as one condition on usage columns: all but the org scope (the selectors'
        reads start from the org's records), the keyword and the order."""
        condition = Q()
        if self.start is not None:
            condition &= Q(use_time__gte=self.start)
        if self.end is not None:
            condition &= Q(use_time__lt=self.end)
        if self.day is not None:
            condition &= Q(use_date=self.day)
        if self.ids is not None:
            condition &= Q(id__in=self.ids)
        for name, column in EQUALITY_COLUMNS.items():
            value = getattr(self, name)
            if value is not None:
                condition &= Q(**{column: value})
        if self.min_amount is not None:
            condition &= Q(amount__gte=self.min_amount)
        if self.max_amount is not None:
            condition &= Q(amount__lte=self.max_amount)
        if self.token_key_hashes is not None:
            condition &= Q(token_key_hash__in=self.token_key_hashes)
        if self.where is not None:
            condition &= self.where
        return condition


# Every record of every org, newest first.
EVERY_RECORD = UsageQuery()


def page_depth_problem(*, offset: int, size: int) -> str | None:
    """Why a page of `size` records after `offset` may not be read by its number (None: it may)."""
    if offset + size > MAX_PAGE_DEPTH:
        return f"Pages end at most {MAX_PAGE_DEPTH} records deep (this one ends at {offset + size})"
    return None
