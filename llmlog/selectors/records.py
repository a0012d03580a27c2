"""The read model: every record a caller may see, the records a query names, a page of them."""

import uuid
from typing import Any

from django.core.exceptions import EmptyResultSet
from django.db import connections
from django.db.models import QuerySet

from llmlog.clickhouse.reads import clickhouse_usage_page
from llmlog.models import LLMUsageHistory, UsageAll
from llmlog.queries import HISTORY, UsageQuery, page_depth_problem
from llmlog.replicas import read_alias, replica_read
from llmlog.selectors.search import usage_search


def usage_records(*, org: str = "") -> QuerySet[UsageAll]:
    """Every usage record, hot or history, that `org` may see ("" = all orgs); unordered. Read from a
    replica when one is fresh (llmlog.replicas.read_alias), as every queryset built here."""
    queryset = UsageAll.objects.using(read_alias())
    return queryset.filter(userorgid=org) if org else queryset


def history_records(*, org: str = "") -> QuerySet[LLMUsageHistory]:
    """The records already moved to `llmusage_history` that `org` may see ("" = all orgs); unordered."""
    queryset = LLMUsageHistory.objects.using(read_alias())
    return queryset.filter(userorgid=org) if org else queryset


@replica_read
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


@replica_read
def usage_page(
    *, query: UsageQuery, offset: int, limit: int, columns: tuple[str, ...]
) -> list[dict[str, Any]]:
    """`limit` records of `query` after the first `offset`, as {column: value} of `columns`. The caller
    has refused a page deeper than MAX_PAGE_DEPTH (naming its own page parameter); this holds it."""
    problem = page_depth_problem(offset=offset, size=limit)
    if problem:
        raise ValueError(problem)
    records = usage_matching(query=query)
    page = clickhouse_usage_page(query=query, records=records, offset=offset, limit=limit, columns=columns)
    if page is not None:  # history read from ClickHouse, which holds it
        return page
    return list(records.values(*columns)[offset : offset + limit])


@replica_read
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
    with connections[rows.db].cursor() as cursor:
        cursor.execute(
            f"SELECT DISTINCT model_name, token_name, channel_id FROM ({sql}) facet_sample", params
        )
        return cursor.fetchall()
