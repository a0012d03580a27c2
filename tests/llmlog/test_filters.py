from datetime import UTC, date, datetime
from decimal import Decimal

import pytest
from django.test import override_settings

from llmlog.filters import InvalidFilter, Ordering, apply_usage_filters, parse_time, usage_filter_values
from llmlog.models import UsageAll
from tests.factories import QUERY_RECORD, make_usage, move_to_history

pytestmark = pytest.mark.django_db

NOON = datetime(2026, 11, 20, 12, tzinfo=UTC)


@pytest.mark.parametrize(
    "text",
    [
        "2026-11-20T12:00:00Z",
        "2026-11-20T12:00:00+00:00",
        "2026-11-20T20:00:00+08:00",
        "2026-11-20 12:00:00",  # no offset: TIME_ZONE (UTC here)
        "1795176000",  # unix seconds
        "1795176000000",  # unix milliseconds
        "1795176000.0",
    ],
)
def test_parse_time_reads_iso_8601_and_unix_seconds_and_milliseconds(text):
    assert parse_time(text) == NOON


def test_parse_time_reads_a_date_as_its_midnight_in_time_zone():
    with override_settings(TIME_ZONE="Asia/Shanghai"):
        assert parse_time("2026-11-21") == datetime(2026, 11, 20, 16, tzinfo=UTC)


def test_parse_time_with_a_fixed_unit_reads_milliseconds_as_told():
    assert parse_time("1795176000000", unit="ms") == NOON
    assert parse_time(1795176000, unit="s") == NOON


def test_a_bare_number_is_seconds_below_1e12_and_milliseconds_from_it():
    assert parse_time("253402214399") == datetime(9999, 12, 30, 23, 59, 59, tzinfo=UTC)  # seconds, not 1978
    with pytest.raises(InvalidFilter):  # seconds too: the year 33658, past any time
        parse_time("999999999999")
    assert parse_time("1000000000000") == datetime(2001, 9, 9, 1, 46, 40, tzinfo=UTC)  # milliseconds


@pytest.mark.parametrize("text", ["yesterday", "2026-13-01", "", "1e400", "99999999999999999999999"])
def test_malformed_time_names_the_parameter(text):
    with pytest.raises(InvalidFilter) as error:
        parse_time(text, name="start_time")
    assert list(error.value.errors) == ["start_time"]


def filtered(**params) -> set[str]:
    return set(
        apply_usage_filters(queryset=UsageAll.objects.all(), params=params).values_list("transno", flat=True)
    )


def test_time_range_is_half_open_and_reads_hot_and_history():
    make_usage(QUERY_RECORD, transno="before", use_time=datetime(2026, 11, 20, 9, 59, 59, tzinfo=UTC))
    make_usage(QUERY_RECORD, transno="at-start", use_time=datetime(2026, 11, 20, 10, tzinfo=UTC))
    moved = make_usage(QUERY_RECORD, transno="inside", use_time=datetime(2026, 11, 20, 10, 30, tzinfo=UTC))
    make_usage(QUERY_RECORD, transno="at-end", use_time=datetime(2026, 11, 20, 11, tzinfo=UTC))
    move_to_history(moved)

    assert filtered(start_time="2026-11-20T10:00:00Z", end_time="2026-11-20T11:00:00Z") == {
        "at-start",
        "inside",
    }
    # the same range as unix seconds and as milliseconds
    assert filtered(start_time="1795168800", end_time="1795172400000") == {"at-start", "inside"}


@pytest.mark.parametrize(
    ("param", "value", "field_value"),
    [
        ("userid", "u-9", {"userid": "u-9"}),
        ("userorgid", "globex", {"userorgid": "globex"}),
        ("ownerid", "anthropic", {"ownerid": "anthropic"}),
        ("llmid", "llm-7", {"llmid": "llm-7"}),
        ("model_name", "claude-sonnet-4", {"model_name": "claude-sonnet-4"}),
        ("token_name", "ci key", {"token_name": "ci key"}),
        ("group", "vip", {"group": "vip"}),
        ("feature", "agent", {"feature": "agent"}),
        ("status", "failed", {"status": "failed"}),
        ("accounting_status", "pending", {"accounting_status": "pending"}),
        ("use_date", "2026-11-21", {"use_time": datetime(2026, 11, 21, 3, tzinfo=UTC)}),
    ],
)
def test_each_filter_selects_its_records(param, value, field_value):
    make_usage(QUERY_RECORD, transno="other")
    make_usage(QUERY_RECORD, transno="wanted", **field_value)

    assert filtered(**{param: value}) == {"wanted"}


def test_amount_bounds_are_inclusive():
    for n, amount in enumerate(["0.00100", "0.01000", "0.10000"]):
        make_usage(QUERY_RECORD, transno=f"a{n}", amount=Decimal(amount))

    assert filtered(min_amount="0.01") == {"a1", "a2"}
    assert filtered(max_amount="0.01") == {"a0", "a1"}
    assert filtered(min_amount="0.005", max_amount="0.05") == {"a1"}


@pytest.mark.parametrize(
    ("param", "value"),
    [
        ("status", "ok"),
        ("accounting_status", "posted"),
        ("start_time", "last tuesday"),
        ("end_time", "2026-02-30T00:00:00Z"),
        ("use_date", "20-11-2026"),
        ("min_amount", "lots"),
        ("ordering", "-transno"),
    ],
)
def test_bad_values_name_the_parameter(param, value):
    with pytest.raises(InvalidFilter) as error:
        apply_usage_filters(queryset=UsageAll.objects.all(), params={param: value})
    assert param in error.value.errors
    assert param in str(error.value)


def test_default_ordering_is_newest_first_with_id_breaking_ties():
    same_time = datetime(2026, 11, 20, 10, tzinfo=UTC)
    first, second = make_usage(QUERY_RECORD, use_time=same_time), make_usage(QUERY_RECORD, use_time=same_time)
    newest = make_usage(QUERY_RECORD, use_time=datetime(2026, 11, 20, 11, tzinfo=UTC))

    rows = list(apply_usage_filters(queryset=UsageAll.objects.all(), params={}))

    assert [row.pk for row in rows] == [newest.pk, second.pk, first.pk]


def test_ordering_by_amount_sorts_unpriced_records_as_zero():
    make_usage(QUERY_RECORD, transno="cheap", amount=Decimal("0.00100"))
    make_usage(QUERY_RECORD, transno="unpriced", amount=None, cost=None, accounting_status="failed")
    make_usage(QUERY_RECORD, transno="dear", amount=Decimal("1.00000"))

    rows = apply_usage_filters(queryset=UsageAll.objects.all(), params={"ordering": "amount"})

    assert [row.transno for row in rows] == ["unpriced", "cheap", "dear"]
    assert Ordering.parse("-amount").descending


def test_filter_values_are_the_cleaned_given_parameters():
    values = usage_filter_values(params={"use_date": "2026-11-20", "model_name": "gpt-4o", "page": "2"})

    assert values == {"use_date": date(2026, 11, 20), "model_name": "gpt-4o"}
