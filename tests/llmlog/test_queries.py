"""UsageQuery: every entry point builds the same value for the same records, and the value says what
the selectors need to know about it (unfiltered, answerable from the hourly rollups)."""

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest
from django.db.models import Q

from llmlog.api.dialects.aiproxy import params as aiproxy
from llmlog.api.dialects.newapi import params as newapi
from llmlog.api.dialects.oneuptime import params as oneuptime
from llmlog.dashboard import month_query
from llmlog.filters import InvalidFilter, native_query
from llmlog.queries import (
    HISTORY,
    MAX_PAGE_DEPTH,
    NO_STATUS,
    Ordering,
    SortTerms,
    UsageQuery,
    page_depth_problem,
)

START = datetime(2026, 11, 20, 8, 0, tzinfo=UTC)
END = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)


def native(**params: str) -> UsageQuery:
    return native_query(params=params, org="acme")


def oneuptime_query(query: dict) -> UsageQuery:
    return oneuptime.log_query({"query": query}, org="acme")


def test_the_same_filter_from_native_and_every_dialect_is_the_same_query():
    expected = UsageQuery(org="acme", start=START, end=END, model_name="gpt-4o", status="success")

    from_native = native(
        start_time=START.isoformat(), end_time=END.isoformat(), model_name="gpt-4o", status="success"
    )
    # new-api: unix seconds, the end inclusive to the second; type 2 is a successful call
    from_newapi = newapi.log_query(
        {
            "start_timestamp": str(int(START.timestamp())),
            "end_timestamp": str(int(END.timestamp()) - 1),
            "model_name": " gpt-4o ",
            "type": "2",
        },
        org="acme",
    )
    # AI Proxy: unix milliseconds, the end inclusive to the millisecond
    from_aiproxy = aiproxy.log_query(
        {
            "start_timestamp": str(int(START.timestamp() * 1000)),
            "end_timestamp": str(int(END.timestamp() * 1000) - 1),
            "model_name": "gpt-4o",
            "code_type": "success",
        },
        org="acme",
    )
    # OneUptime: operators on its own field names
    from_oneuptime = oneuptime_query(
        {
            "createdAt": {"_type": "GreaterThanOrEqual", "value": START.isoformat()},
            "requestStartedAt": {"_type": "LessThan", "value": END.isoformat()},
            "modelName": "gpt-4o",
            "status": "Success",
        }
    )

    assert from_native == from_newapi == from_aiproxy == from_oneuptime == expected


def test_the_dashboard_builds_the_query_native_whole_days_would():
    now = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
    month = month_query(org="acme", now=now, days=2)

    assert month == native_query(
        params={"start_time": month.start.isoformat(), "end_time": month.end.isoformat(), "userorgid": "acme"}
    )
    assert month.end - month.start == timedelta(days=2)
    assert month_query(now=now).userorgid is None  # "" follows every org, not an org named ""


def test_native_query_reads_every_filter_into_its_field():
    query = native(
        use_date="2026-11-20",
        userid="u1",
        ownerid="owner",
        llmid="m1",
        token_name="t",
        group="g",
        feature="f",
        accounting_status="pending",
        min_amount="0.5",
        max_amount="2",
        ordering="-amount",
        page="3",  # not a filter: the caller's
    )

    assert query == UsageQuery(
        org="acme",
        day=date(2026, 11, 20),
        userid="u1",
        ownerid="owner",
        llmid="m1",
        token_name="t",
        group="g",
        feature="f",
        accounting_status="pending",
        min_amount=Decimal("0.5"),
        max_amount=Decimal("2"),
        ordering=Ordering(field="amount", descending=True),
    )


def test_bad_native_parameters_are_named():
    with pytest.raises(InvalidFilter) as error:
        native(status="meh", end_time="soon")
    assert set(error.value.errors) == {"status", "end_time"}


def test_unfiltered_is_every_record_of_every_org_whatever_the_order():
    assert UsageQuery().is_unfiltered
    assert UsageQuery(ordering=Ordering.parse("amount")).is_unfiltered
    assert UsageQuery(source=HISTORY).is_unfiltered
    assert native_query(params={"ordering": "-cost", "page": "2"}).is_unfiltered
    assert not UsageQuery(org="acme").is_unfiltered
    assert not UsageQuery(userorgid="acme").is_unfiltered
    assert not UsageQuery(keyword="x").is_unfiltered
    assert not UsageQuery(where=Q(provider="openai")).is_unfiltered
    assert not UsageQuery(status=NO_STATUS).is_unfiltered  # a filter that finds nothing is a filter


@pytest.mark.parametrize(
    "query",
    [
        UsageQuery(),
        UsageQuery(org="acme"),
        UsageQuery(start=START, end=END),
        UsageQuery(org="acme", model_name="gpt-4o", status="failed", start=START),
        UsageQuery(ordering=Ordering.parse("-amount")),
    ],
)
def test_the_rollups_answer_org_model_status_and_a_time_range(query):
    assert query.rollups_can_answer


@pytest.mark.parametrize(
    "query",
    [
        UsageQuery(feature="agent"),
        UsageQuery(userid="u1", start=START),
        UsageQuery(token_name="t"),
        UsageQuery(min_amount=Decimal(1)),
        UsageQuery(accounting_status="pending"),
        UsageQuery(keyword="gpt"),
        UsageQuery(where=Q(provider="openai")),
        UsageQuery(token_key_hashes=("ab",)),
        UsageQuery(source=HISTORY),  # the rollups sum hot and history alike
        # use_date is the day in the zone that stamped the record, not always today's TIME_ZONE's day
        UsageQuery(day=date(2026, 11, 20), userorgid="acme"),
    ],
)
def test_the_rollups_cannot_answer_anything_else(query):
    assert not query.rollups_can_answer


def test_new_apis_row_only_filters_keep_stat_off_the_rollups():
    assert newapi.log_query({"model_name": "gpt-4o", "type": "4"}, org="").rollups_can_answer
    for param in ("username", "token_name", "channel", "group"):
        assert not newapi.log_query({param: "x"}, org="").rollups_can_answer


def test_log_types_that_are_not_usage_find_nothing():
    assert newapi.log_query({"type": "1"}, org="").finds_nothing
    assert newapi.log_query({"type": "0"}, org="").status is None
    assert oneuptime_query({"status": "Insufficient Balance"}).finds_nothing


def test_oneuptime_sort_is_its_own_order_and_a_count_has_none():
    body = {"query": {"modelName": "gpt-4o"}, "sort": {"totalTokens": 1}}

    sorted_query = oneuptime.log_query(body, org="", sort=True)

    assert sorted_query.ordering == SortTerms(tuple(oneuptime.parse_sort(body["sort"])))
    assert sorted_query != oneuptime.log_query(body, org="")
    assert oneuptime.log_query(body, org="") == UsageQuery(model_name="gpt-4o")


def test_oneuptime_conditions_the_query_cannot_hold_stay_its_own():
    query = oneuptime_query({"modelName": {"_type": "Search", "value": "gpt"}, "totalTokens": 5})

    assert query.model_name is None and query.where is not None
    # the same bound twice: the first is the query's, the second a condition of its own
    twice = oneuptime_query(
        {
            "createdAt": {"_type": "GreaterThanOrEqual", "value": START.isoformat()},
            "requestStartedAt": {"_type": "GreaterThanOrEqual", "value": END.isoformat()},
        }
    )
    assert twice.start == START and twice.where == Q(use_time__gte=END)


def test_the_page_depth_rule_is_one_limit():
    assert page_depth_problem(offset=MAX_PAGE_DEPTH - 100, size=100) is None
    assert "10000 records deep" in page_depth_problem(offset=MAX_PAGE_DEPTH - 99, size=100)
