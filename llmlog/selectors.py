"""Reads of usage records: lists, counts, totals, search and stats, over hot and history alike.

A read is described by a `UsageQuery` (llmlog.queries): which records, in what order. Every read starts
from `usage_records(org=...)` (the `llmusage_all` view: UNION ALL of `llmusage` and
`llmusage_history`), so a time range answers the same before and after the nightly move. `org` is the
caller's org: "" means every org (a platform key), anything else scopes every query to that org.

Money is returned as Decimal and tokens as int; callers (views, dialects) shape them for their clients.
"""

import contextlib
import functools
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from django.core.exceptions import EmptyResultSet
from django.db import connection
from django.db.models import Count, Exists, FloatField, Q, QuerySet, Sum
from django.db.models.functions import Cast, TruncDate
from django.utils import timezone

from llmlog.db import bound_cursor
from llmlog.filters import clean_text, day_range
from llmlog.models import TOKEN_COUNT_FIELDS, LLMUsageHistory, UsageAll, UsageRollup, UsageRollupState
from llmlog.queries import ALL, EVERY_RECORD, HISTORY, UsageQuery, page_depth_problem

TOKEN_FIELDS = (*TOKEN_COUNT_FIELDS, "total_tokens")
MONEY_FIELDS = ("amount", "cost")
# RPM and TPM count the records that started in this window before now.
RATE_WINDOW = timedelta(seconds=60)


# --- the read model ------------------------------------------------------------------------------


def usage_records(*, org: str = "") -> QuerySet[UsageAll]:
    """Every usage record, hot or history, that `org` may see ("" = all orgs); unordered."""
    queryset = UsageAll.objects.all()
    return queryset.filter(userorgid=org) if org else queryset


def history_records(*, org: str = "") -> QuerySet[LLMUsageHistory]:
    """The records already moved to `llmusage_history` that `org` may see ("" = all orgs); unordered."""
    queryset = LLMUsageHistory.objects.all()
    return queryset.filter(userorgid=org) if org else queryset


def usage_record(*, org: str = "", id: str | uuid.UUID) -> UsageAll:  # noqa: A002 - the design's name
    """One record by id, hot or history. Raises UsageAll.DoesNotExist when absent or of another org."""
    return usage_records(org=org).get(pk=id)


def usage_matching(*, query: UsageQuery) -> QuerySet:
    """The records `query` names, in its order (searched by its keyword when it has one)."""
    records = history_records(org=query.org) if query.source == HISTORY else usage_records(org=query.org)
    if query.finds_nothing:
        return records.none()
    records = query.ordering.apply(records.filter(query.condition()))
    if query.keyword is None:
        return records
    return usage_search(queryset=records, keyword=query.keyword, also=query.keyword_terms or ())


def usage_page(
    *, query: UsageQuery, offset: int, limit: int, columns: tuple[str, ...]
) -> list[dict[str, Any]]:
    """`limit` records of `query` after the first `offset`, as {column: value} of `columns`. The caller
    has refused a page deeper than MAX_PAGE_DEPTH (naming its own page parameter); this holds it."""
    problem = page_depth_problem(offset=offset, size=limit)
    if problem:
        raise ValueError(problem)
    return list(usage_matching(query=query).values(*columns)[offset : offset + limit])


def usage_facets(*, query: UsageQuery, sample: int) -> list[tuple[str, str, str]]:
    """The distinct (model_name, token_name, channel_id) of the newest `sample` records of `query`: one
    bounded read along the (userorgid, use_time) index, cheap on a table of any size."""
    # newest first by use_time alone: ties do not matter to a sample, and it keeps to the index order
    records = usage_matching(query=query).order_by("-use_time")
    rows = records.values("model_name", "token_name", "channel_id")[:sample]
    try:
        sql, params = rows.query.sql_with_params()
    except EmptyResultSet:  # a query that finds nothing
        return []
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT DISTINCT model_name, token_name, channel_id FROM ({sql}) facet_sample", params
        )
        return cursor.fetchall()


def usage_record_values(
    *,
    org: str = "",
    id: str | uuid.UUID,  # noqa: A002 - the design's name
    model: type[UsageAll] | type[LLMUsageHistory] = UsageAll,
) -> dict[str, Any]:
    """One record by id as {attname: value}: hot or history (`UsageAll`), or history only. Raises
    `model.DoesNotExist` when absent or of another org.

    Get-item is the hottest read, and on PostgreSQL compiling its 50-column SELECT and building a model
    instance cost twice the query itself: the statement is composed once per model and its rows read
    plain. Elsewhere (SQLite) the ORM does it, with its own conversions.
    """
    if connection.vendor != "postgresql":
        queryset = model.objects.filter(userorgid=org) if org else model.objects.all()
        return queryset.values().get(pk=id)
    row = _fetch_one(_record_statement(model), [id], org=org)
    if row is None:
        raise model.DoesNotExist(f"No {model._meta.verbose_name} {id}.")
    return _plain_row(model, tuple(_attnames(model).values()), row)


def usage_rows(queryset: QuerySet, *, prepare: bool = False) -> list[dict[str, Any]]:
    """A queryset of usage records (any filters, order and slice) as {attname: value} rows, as get-item
    reads its one: what a page of the API shows.

    On PostgreSQL the ORM composes the statement and its rows are read plain, only the JSON columns
    converted: building twenty 50-column model instances and running each value through the ORM's
    converters costs as much as the query. With `prepare` the statement is prepared (llmlog.db): for
    statements whose plan does not hang on the values, not for a search, whose generic plan cannot use
    the trigram index. Elsewhere (SQLite) `.values()`, with the ORM's conversions.
    """
    if connection.vendor != "postgresql":
        return list(queryset.values())
    try:
        sql, params = queryset.query.sql_with_params()
    except EmptyResultSet:  # a condition nothing can meet (`id IN ()`): the ORM answers no rows unasked
        return []
    with bound_cursor() as cursor:
        cursor.execute(sql, params, prepare=prepare)
        attnames = _attnames(queryset.model)
        names = tuple(attnames.get(column.name, column.name) for column in cursor.description)
        rows = cursor.fetchall()
    return [_plain_row(queryset.model, names, row) for row in rows]


def _plain_row(model, names: tuple[str, ...], row: tuple) -> dict[str, Any]:
    values = dict(zip(names, row, strict=True))
    for name, field in _json_fields(model):
        if name in values:  # Django's connection loads jsonb as text; the field decodes it
            values[name] = field.from_db_value(values[name], None, connection)
    return values


@functools.cache
def _json_fields(model) -> tuple[tuple[str, Any], ...]:
    return tuple((f.attname, f) for f in model._meta.concrete_fields if f.get_internal_type() == "JSONField")


@functools.cache
def _attnames(model) -> dict[str, str]:
    """column -> attname, in the model's column order (the same names today; a db_column someday must
    not rename a key of the answer)."""
    return {field.column: field.attname for field in model._meta.concrete_fields}


@functools.cache
def _record_statement(model) -> str:
    quote = connection.ops.quote_name
    columns = ", ".join(quote(field.column) for field in model._meta.concrete_fields)
    return f"SELECT {columns} FROM {quote(model._meta.db_table)} WHERE id = %s"


# --- totals, rates, counts, search ---------------------------------------------------------------


def _empty_totals() -> dict[str, Any]:
    return {"requests": 0, **dict.fromkeys(TOKEN_FIELDS, 0), "amount": Decimal(0), "cost": Decimal(0)}


def _row_sums() -> dict[str, Any]:
    return {"requests": Count("id"), **{name: _sum(name) for name in TOKEN_FIELDS + MONEY_FIELDS}}


def _rollup_sums() -> dict[str, Any]:
    return {name: _sum(name) for name in ("requests", *TOKEN_FIELDS, *MONEY_FIELDS)}


def _sum(name: str) -> Sum:
    """SUM of a column that cannot overflow. PostgreSQL adds integers as numeric; SQLite's SUM raises
    past 2^63 (rows stored before ingest bounded their counts can get there), so there counts add as
    REAL, exact up to 2^53, far past any real total. Money adds as it is on both."""
    if connection.vendor == "sqlite" and name not in MONEY_FIELDS:
        return Sum(Cast(name, FloatField()))
    return Sum(name)


def _add(into: dict[str, Any], values: Mapping[str, Any]) -> dict[str, Any]:
    for name in ("requests", *TOKEN_FIELDS):
        into[name] += int(values.get(name) or 0)
    for name in MONEY_FIELDS:
        into[name] += values.get(name) or 0
    return into


def usage_totals(*, queryset: QuerySet) -> dict[str, Any]:
    """Sums over `queryset` (usage rows): {requests, input_tokens, output_tokens, cached_tokens,
    cache_creation_tokens, reasoning_tokens, image_input_tokens, web_search_count, total_tokens: int,
    amount, cost: Decimal}. Unpriced records (amount or cost NULL) add 0."""
    return _add(_empty_totals(), queryset.order_by().aggregate(**_row_sums()))


def usage_rpm_tpm(*, queryset: QuerySet, now: datetime | None = None) -> dict[str, int]:
    """{rpm, tpm}: requests and total tokens of the records in `queryset` that started in the last 60 s."""
    since = (now or timezone.now()) - RATE_WINDOW
    recent = queryset.filter(use_time__gte=since).order_by()
    sums = recent.aggregate(rpm=Count("id"), tpm=_sum("total_tokens"))
    return {"rpm": sums["rpm"] or 0, "tpm": int(sums["tpm"] or 0)}


def usage_rates(*, query: UsageQuery = EVERY_RECORD, now: datetime | None = None) -> dict[str, int]:
    """{rpm, tpm} of the records of `query` that started in the last 60 s, whatever its time range.

    Unfiltered but for the org (what a dashboard polls every few seconds): the nightly move takes days
    before today only, so a minute that lies within today has all its records in llmusage, and on
    PostgreSQL one composed statement reads that table alone (compiling the aggregate and planning the
    llmusage_all view cost more than the query). Across midnight, on SQLite, or under any other filter
    it is `usage_rpm_tpm` over the view.
    """
    now = now or timezone.now()
    query = query.without_time()
    if query.source != ALL or query.keyword is not None or not query.given() <= {"org"}:
        return usage_rpm_tpm(queryset=usage_matching(query=query), now=now)
    org = query.org
    since = now - RATE_WINDOW
    if connection.vendor != "postgresql" or timezone.localdate(since) < timezone.localdate(now):
        return usage_rpm_tpm(queryset=usage_records(org=org), now=now)
    sql = "SELECT count(*), sum(total_tokens) FROM llmusage WHERE use_time >= %s"
    rpm, tpm = _fetch_one(sql, [since], org=org)
    return {"rpm": rpm, "tpm": int(tpm or 0)}


def _fetch_one(sql: str, params: list[Any], *, org: str) -> tuple | None:
    """The first row of a composed statement (its WHERE ends the SQL), scoped to `org` unless "" (all)."""
    if org:
        sql, params = f"{sql} AND userorgid = %s", [*params, org]
    with bound_cursor() as cursor:
        cursor.execute(sql, params, prepare=True)
        return cursor.fetchone()


# The planner's row estimate of each named table; a partitioned table (llmusage_history on PostgreSQL)
# has none of its own, so its partitions' are summed. reltuples is -1 for a table never analysed: with
# no pages it reads 0 (relpages too is only set by VACUUM or ANALYZE, so rows may be there: usage_count
# counts below its floor), with pages the answer is NULL.
_ESTIMATE_SQL = """
    WITH tables AS (
        SELECT c.relname, COALESCE(part.oid, c.oid) AS oid
        FROM pg_class c
        LEFT JOIN pg_inherits i ON c.relkind = 'p' AND i.inhparent = c.oid
        LEFT JOIN pg_class part ON part.oid = i.inhrelid
        WHERE c.relname = ANY(%s) AND c.relkind IN ('r', 'p')
    )
    SELECT CASE WHEN bool_and(p.reltuples >= 0 OR p.relpages = 0) THEN sum(greatest(p.reltuples, 0)) END
    FROM tables t JOIN pg_class p ON p.oid = t.oid
    GROUP BY t.relname
"""


# Below this many rows an estimate is not worth giving: counting them costs about as much as reading
# the statistics, and a table's statistics can say 0 (or nothing) while it holds rows: never analysed
# (reltuples -1, relpages 0 until the first VACUUM), or analysed while empty and filled since.
COUNT_ESTIMATE_FLOOR = 10_000


def usage_count(*, query: UsageQuery) -> dict[str, Any]:
    """{count, estimated}: how many records `query` names. Exact under any filter or org; for every
    record of every org (an unfiltered query) PostgreSQL answers from the planner's statistics instead
    of counting the whole table, and says so (`_count`)."""
    if query.finds_nothing:
        return {"count": 0, "estimated": False}
    records = usage_matching(query=query)
    return _count(queryset=records, estimate=query.is_unfiltered and query.keyword is None)


def _count(*, queryset: QuerySet, estimate: bool = False) -> dict[str, Any]:
    """{count, estimated}. With `estimate` (a whole table, unfiltered) PostgreSQL answers from the
    planner's statistics instead of counting every row, and says so; elsewhere the count is exact.

    An estimate is never 0 for a table that has rows: below COUNT_ESTIMATE_FLOOR, or without
    statistics, the rows are counted up to the floor (a COUNT over a LIMIT, bounded work): fewer is the
    exact count, more is at least the floor, still `estimated`.
    """
    if not (estimate and connection.vendor == "postgresql"):
        return {"count": queryset.order_by().count(), "estimated": False}
    model = queryset.model
    tables = ["llmusage", "llmusage_history"] if model is UsageAll else [model._meta.db_table]
    with connection.cursor() as cursor:
        cursor.execute(_ESTIMATE_SQL, [tables])
        estimates = [row[0] for row in cursor.fetchall()]
    # NULL when a table (or a partition holding rows) was never vacuumed or analysed: no estimate.
    known = len(estimates) == len(tables) and all(value is not None for value in estimates)
    planned = int(sum(estimates)) if known else 0
    if planned >= max(COUNT_ESTIMATE_FLOOR, 1):
        return {"count": planned, "estimated": True}
    counted = queryset.order_by()[: COUNT_ESTIMATE_FLOOR + 1].count()
    if counted <= COUNT_ESTIMATE_FLOOR:
        return {"count": counted, "estimated": False}
    return {"count": max(planned, counted), "estimated": True}


def usage_search(*, queryset: QuerySet, keyword: str, also: Sequence[Q] = ()) -> QuerySet:
    """The records of `queryset` that `keyword` names: equal to its id, transno, userid, username,
    userorgid, model_name or token_name, or found (case-insensitive) in its error_message; or meeting
    one of the conditions `also` (a dialect's own meanings of the keyword, e.g. new-api's log type).

    Each of these columns is indexed (error_message by trigrams, on PostgreSQL); request and response
    bodies are not searched. Order is kept from `queryset`. Raises InvalidFilter naming `keyword` when
    it holds what no query can (NUL, a lone surrogate).
    """
    keyword = clean_text(keyword, name="keyword").strip()
    if not keyword:
        return queryset.none()
    terms = [
        Q(transno=keyword),
        Q(userid=keyword),
        Q(username=keyword),
        Q(userorgid=keyword),
        Q(model_name=keyword),
        Q(token_name=keyword),
        # `<> ''` lets PostgreSQL use the partial trigram index, which leaves out records without error.
        Q(error_message__icontains=keyword) & ~Q(error_message=""),
    ]
    with contextlib.suppress(ValueError):
        terms.append(Q(id=uuid.UUID(keyword)))
    terms += also
    # Keep only the terms that match something, each probed on its own index (one query of EXISTS
    # sub-selects, evaluated once each). Without this a keyword
    # that matches nothing makes PostgreSQL walk the whole use_time index looking for the newest match
    # (seconds at a million rows), because it guesses a value of a few-valued column matches many.
    probes = {f"term_{i}": Exists(queryset.filter(term).order_by()) for i, term in enumerate(terms)}
    flags = queryset.model.objects.annotate(**probes).values(*probes).order_by().first() or {}
    found = [term for i, term in enumerate(terms) if flags.get(f"term_{i}")]
    if not found:
        return queryset.none()
    match = found[0]
    for term in found[1:]:
        match |= term
    return queryset.filter(match)


# --- stats ---------------------------------------------------------------------------------------


def _floor_hour(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def _ceil_hour(moment: datetime) -> datetime:
    floor = _floor_hour(moment)
    return floor if floor == moment else floor + timedelta(hours=1)


def rollups_built_through() -> datetime | None:
    """Every UTC hour before this has its rollups built (None: none built yet)."""
    state = UsageRollupState.objects.filter(name="usage").only("built_through").first()
    return state.built_through if state else None


def _rollup_window(
    query: UsageQuery, *, now: datetime, built_through: datetime | None
) -> tuple[datetime | None, datetime] | None:
    """The whole closed, built UTC hours inside the query's time range, as [lo, hi) (lo None: from the
    beginning); None when the rollups cannot answer any part of it."""
    if built_through is None or not query.rollups_can_answer:
        return None
    start, end = query.start, query.end
    if query.day is not None:
        day_start, day_end = day_range(query.day)
        start = max(start, day_start) if start else day_start
        end = min(end, day_end) if end else day_end
    lo = _ceil_hour(start) if start else None
    hi = min(moment for moment in (end, built_through, now) if moment is not None)
    hi = _floor_hour(hi)
    if lo is not None and lo >= hi:
        return None
    return lo, hi


def _grouped_sums(
    *,
    query: UsageQuery,
    now: datetime,
    group_by: Callable[[str], dict[str, Any]],
) -> tuple[list[Mapping[str, Any]], tuple[datetime | None, datetime] | None]:
    """Sums of the records of `query`, grouped by `group_by(time column)` (the rollups' time column is
    `hour`, the rows' `use_time`); and the [lo, hi) window read from rollups.

    Whole closed UTC hours already built come from `llmusage_rollup`, the rest from the rows. The
    same group can come back twice (once from each source): callers add them up.
    """
    rows = usage_matching(query=query).order_by()
    window = _rollup_window(query, now=now, built_through=rollups_built_through())
    groups: list[Mapping[str, Any]] = []
    if window is not None:
        lo, hi = window
        rollups = UsageRollup.objects.filter(hour__lt=hi)
        if lo is not None:
            rollups = rollups.filter(hour__gte=lo)
            rows = rows.filter(Q(use_time__lt=lo) | Q(use_time__gte=hi))
        else:
            rows = rows.filter(use_time__gte=hi)
        for name in ("userorgid", "model_name", "status"):
            if getattr(query, name) is not None:
                rollups = rollups.filter(**{name: getattr(query, name)})
        if query.org:
            rollups = rollups.filter(userorgid=query.org)
        groups += _values(rollups.order_by(), group_by("hour")).annotate(**_rollup_sums())
    groups += _values(rows, group_by("use_time")).annotate(**_row_sums())
    return groups, window


def _values(queryset: QuerySet, spec: dict[str, Any]) -> QuerySet:
    """values() by `spec`: a name mapped to None is the column itself, otherwise an expression."""
    columns = [name for name, expression in spec.items() if expression is None]
    expressions = {name: expression for name, expression in spec.items() if expression is not None}
    return queryset.values(*columns, **expressions)


def usage_sums_by_org(*, query: UsageQuery, now: datetime | None = None) -> list[dict[str, Any]]:
    """[{userorgid, requests, <token kinds>, amount, cost}] of the records of `query`, most amount first."""
    groups, _ = _grouped_sums(query=query, now=now or timezone.now(), group_by=lambda _: {"userorgid": None})
    by_org: dict[str, dict[str, Any]] = {}
    for group in groups:
        _add(by_org.setdefault(group["userorgid"], _empty_totals()), group)
    return [
        {"userorgid": name, **sums}
        for name, sums in sorted(by_org.items(), key=lambda item: (-item[1]["amount"], item[0]))
    ]


def usage_stats(*, query: UsageQuery = EVERY_RECORD, now: datetime | None = None) -> dict[str, Any]:
    """Totals, rates and breakdowns of the records of `query`.

    Returns {requests, <token kinds>: int, amount, cost: Decimal, rpm, tpm: int,
    by_model: [{model_name, requests, <token kinds>, amount, cost}] (most requests first),
    by_day: [{day: date (in TIME_ZONE), requests, <token kinds>, amount, cost}] (oldest first),
    rollup_hours: [lo, hi) answered from hourly rollups, or None}.

    When the rollups can answer the query (UsageQuery.rollups_can_answer: org, model, status and time
    range only), whole closed UTC hours already built are read from `llmusage_rollup` and only the rest
    (the open hour, partial hours at the edges, hours not built yet) from the rows. rpm and tpm are over
    the last 60 seconds under the same filters except the time range.
    """
    now = now or timezone.now()
    tz = timezone.get_current_timezone()
    groups, window = _grouped_sums(
        query=query,
        now=now,
        group_by=lambda time_column: {"model_name": None, "day": TruncDate(time_column, tzinfo=tz)},
    )

    totals = _empty_totals()
    by_model: dict[str, dict[str, Any]] = {}
    by_day: dict[date, dict[str, Any]] = {}
    for group in groups:
        _add(totals, group)
        _add(by_model.setdefault(group["model_name"], _empty_totals()), group)
        _add(by_day.setdefault(group["day"], _empty_totals()), group)

    rates = usage_rpm_tpm(queryset=usage_matching(query=query.without_time()), now=now)
    return {
        **totals,
        **rates,
        "by_model": [
            {"model_name": name, **sums}
            for name, sums in sorted(by_model.items(), key=lambda item: (-item[1]["requests"], item[0]))
        ],
        "by_day": [{"day": day, **sums} for day, sums in sorted(by_day.items())],
        "rollup_hours": list(window) if window else None,
    }
