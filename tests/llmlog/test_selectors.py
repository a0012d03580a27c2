from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest
from django.db import connection
from django.test import override_settings
from django.utils import timezone

from llmlog.filters import InvalidFilter, Ordering, native_query
from llmlog.models import LLMUsageHistory, UsageAll
from llmlog.queries import HISTORY, UsageQuery
from llmlog.selectors.records import history_records, usage_record, usage_records
from llmlog.selectors.rows import usage_record_values, usage_rows
from llmlog.selectors.search import usage_search
from llmlog.selectors.stats import usage_rates, usage_rpm_tpm, usage_stats
from llmlog.selectors.sums import usage_totals
from llmlog.selectors.totals import usage_count
from tests.factories import QUERY_RECORD, make_usage, move_to_history

pytestmark = pytest.mark.django_db


def transnos(queryset) -> set[str]:
    return set(queryset.values_list("transno", flat=True))


def test_usage_records_of_an_org_are_only_its_own_hot_and_history():
    mine, moved = make_usage(QUERY_RECORD, transno="mine"), make_usage(QUERY_RECORD, transno="moved")
    make_usage(QUERY_RECORD, transno="theirs", userorgid="globex")
    move_to_history(moved)

    assert transnos(usage_records(org="acme")) == {"mine", "moved"}
    assert transnos(usage_records()) == {"mine", "moved", "theirs"}
    assert transnos(history_records(org="acme")) == {"moved"}
    assert transnos(history_records(org="globex")) == set()
    assert usage_record(org="acme", id=moved.pk).source == "history"
    with pytest.raises(UsageAll.DoesNotExist):
        usage_record(org="globex", id=mine.pk)


def test_totals_sum_every_token_kind_and_money_with_unpriced_as_zero():
    make_usage(
        QUERY_RECORD,
        input_tokens=1000,
        output_tokens=300,
        cached_tokens=200,
        reasoning_tokens=100,
        amount=Decimal("1.5"),
    )
    make_usage(
        QUERY_RECORD,
        input_tokens=10,
        output_tokens=5,
        cached_tokens=0,
        cache_creation_tokens=4,
        image_input_tokens=3,
        web_search_count=2,
        amount=None,
        cost=None,
    )

    totals = usage_totals(queryset=usage_records())

    assert totals == {
        "requests": 2,
        "input_tokens": 1010,
        "output_tokens": 305,
        "cached_tokens": 200,
        "cache_creation_tokens": 4,
        "reasoning_tokens": 100,
        "image_input_tokens": 3,
        "web_search_count": 2,
        "total_tokens": 1315,
        "amount": Decimal("1.5"),
        "cost": Decimal("0.008"),
    }


def test_totals_of_nothing_are_zero():
    assert usage_totals(queryset=usage_records(org="nobody"))["amount"] == 0
    assert usage_totals(queryset=usage_records(org="nobody"))["requests"] == 0


def test_rpm_and_tpm_count_the_last_60_seconds():
    now = timezone.now()
    make_usage(QUERY_RECORD, use_time=now - timedelta(seconds=10), input_tokens=100, output_tokens=50)
    make_usage(
        QUERY_RECORD, use_time=now - timedelta(seconds=59), input_tokens=10, output_tokens=0, cached_tokens=0
    )
    make_usage(QUERY_RECORD, use_time=now - timedelta(seconds=61), input_tokens=999, output_tokens=1)
    make_usage(QUERY_RECORD, use_time=now - timedelta(seconds=5), userorgid="globex")

    assert usage_rpm_tpm(queryset=usage_records(org="acme"), now=now) == {"rpm": 2, "tpm": 160}


def test_rates_unfiltered_count_the_minute_and_reach_into_history_across_midnight():
    now = timezone.now()
    make_usage(QUERY_RECORD, use_time=now - timedelta(seconds=10), input_tokens=100, output_tokens=50)
    make_usage(QUERY_RECORD, use_time=now - timedelta(seconds=90), input_tokens=999, output_tokens=1)
    make_usage(
        QUERY_RECORD,
        use_time=now - timedelta(seconds=5),
        userorgid="globex",
        input_tokens=5,
        output_tokens=5,
        cached_tokens=0,
    )

    assert usage_rates(query=UsageQuery(org="acme"), now=now) == {"rpm": 1, "tpm": 150}
    assert usage_rates(now=now) == {"rpm": 2, "tpm": 160}
    assert usage_rates(query=UsageQuery(org="nobody"), now=now) == {"rpm": 0, "tpm": 0}

    # Just after midnight the minute reaches into yesterday, whose records the nightly move may have
    # taken to history already.
    midnight = timezone.localtime(now).replace(hour=0, minute=0, second=0, microsecond=0)
    late = make_usage(
        QUERY_RECORD,
        use_time=midnight - timedelta(seconds=20),
        userorgid="night",
        input_tokens=7,
        output_tokens=0,
        cached_tokens=0,
    )
    move_to_history(late)
    assert usage_rates(query=UsageQuery(org="night"), now=midnight + timedelta(seconds=10)) == {
        "rpm": 1,
        "tpm": 7,
    }


def test_record_values_are_the_fields_of_one_record_scoped_to_the_org():
    hot = make_usage(QUERY_RECORD, transno="hot", amount=Decimal("1.25"), metadata={"team": "search"})
    moved = make_usage(QUERY_RECORD, transno="moved")
    move_to_history(moved)

    values = usage_record_values(org="acme", id=hot.pk)
    assert values["transno"] == "hot" and values["amount"] == Decimal("1.25")
    assert values["metadata"] == {"team": "search"} and values["id"] == hot.pk
    assert values["source"] == "hot"
    assert usage_record_values(id=moved.pk)["source"] == "history"
    assert usage_record_values(id=moved.pk, model=LLMUsageHistory)["backup_time"] is not None
    with pytest.raises(UsageAll.DoesNotExist):
        usage_record_values(org="globex", id=hot.pk)
    with pytest.raises(LLMUsageHistory.DoesNotExist):
        usage_record_values(id=hot.pk, model=LLMUsageHistory)


def test_rows_of_a_queryset_are_what_values_gives_in_its_order():
    """usage_rows reads plain rows on PostgreSQL; the ORM's .values() is the reference."""
    make_usage(
        QUERY_RECORD,
        transno="a",
        metadata={"team": "search", "ids": [1, 2]},
        usages={"input": 5},
        amount=None,
    )
    make_usage(
        QUERY_RECORD, transno="b", use_time=datetime(2026, 11, 20, 11, tzinfo=UTC), price={"in": "0.5"}
    )
    move_to_history(make_usage(QUERY_RECORD, transno="c", use_time=datetime(2026, 11, 19, 9, tzinfo=UTC)))
    make_usage(QUERY_RECORD, transno="theirs", userorgid="globex")
    newest_first = usage_records(org="acme").order_by("-use_time", "-id")
    by_amount = Ordering.parse("-amount").apply(usage_records(org="acme"))  # adds a sort column

    for queryset in (
        newest_first,
        newest_first[1:3],
        by_amount,
        history_records(),
        newest_first.filter(id__in=[]),
    ):
        assert usage_rows(queryset) == list(queryset.values())
    assert [row["transno"] for row in usage_rows(newest_first)] == ["b", "a", "c"]


def test_count_is_exact_when_filtered_or_off_postgresql():
    make_usage(QUERY_RECORD)
    moved = make_usage(QUERY_RECORD)
    move_to_history(moved)

    assert usage_count(query=UsageQuery(org="acme")) == {"count": 2, "estimated": False}
    if connection.vendor != "postgresql":
        assert usage_count(query=UsageQuery()) == {"count": 2, "estimated": False}


@pytest.mark.postgres
def test_unfiltered_count_on_postgresql_is_the_planner_estimate_and_says_so(monkeypatch):
    # Estimates start at selectors.COUNT_ESTIMATE_FLOOR rows (fewer are counted): lowered to 1 here.
    monkeypatch.setattr("llmlog.selectors.totals.COUNT_ESTIMATE_FLOOR", 1)
    for _ in range(5):
        make_usage(QUERY_RECORD)
    move_to_history(make_usage(QUERY_RECORD), make_usage(QUERY_RECORD))
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE llmusage")
        cursor.execute("ANALYZE llmusage_history")

    assert usage_count(query=UsageQuery()) == {"count": 7, "estimated": True}
    assert usage_count(query=UsageQuery(source=HISTORY)) == {"count": 2, "estimated": True}


@pytest.mark.parametrize(
    ("field", "value", "keyword"),
    [
        ("transno", "gw-123-abc", "gw-123-abc"),
        ("userid", "u-77", "u-77"),
        ("username", "Grace Hopper", "Grace Hopper"),
        ("userorgid", "initech", "initech"),
        ("model_name", "o3-mini", "o3-mini"),
        ("token_name", "nightly batch", "nightly batch"),
        ("error_message", "Rate limit reached for requests", "RATE LIMIT"),
    ],
)
def test_search_finds_a_record_by_each_searched_column(field, value, keyword):
    make_usage(QUERY_RECORD, transno="noise")
    wanted = make_usage(QUERY_RECORD, **{field: value})
    move_to_history(wanted)  # search reads history too

    assert transnos(usage_search(queryset=usage_records(), keyword=keyword)) == {wanted.transno}


def test_search_finds_by_id_and_never_looks_into_bodies():
    record = make_usage(QUERY_RECORD, ioinfo={"request": "secret-needle", "response": "", "truncated": False})

    assert transnos(usage_search(queryset=usage_records(), keyword=str(record.pk))) == {record.transno}
    assert transnos(usage_search(queryset=usage_records(), keyword="secret-needle")) == set()
    assert transnos(usage_search(queryset=usage_records(), keyword="  ")) == set()


def test_search_stays_inside_the_org():
    make_usage(QUERY_RECORD, userorgid="globex", model_name="shared-model")

    assert transnos(usage_search(queryset=usage_records(org="acme"), keyword="shared-model")) == set()


def test_stats_give_totals_by_model_and_by_day_under_the_filters():
    day1, day2 = datetime(2026, 11, 19, 8, tzinfo=UTC), datetime(2026, 11, 20, 8, tzinfo=UTC)
    make_usage(QUERY_RECORD, use_time=day1, model_name="gpt-4o", amount=Decimal("1"), cost=Decimal("0.5"))
    make_usage(QUERY_RECORD, use_time=day2, model_name="gpt-4o", amount=Decimal("2"), cost=Decimal("1"))
    make_usage(
        QUERY_RECORD,
        use_time=day2,
        model_name="claude",
        amount=Decimal("4"),
        cost=Decimal("3"),
        status="failed",
    )
    make_usage(QUERY_RECORD, use_time=day2, userorgid="globex", amount=Decimal("100"))

    stats = usage_stats(query=native_query(org="acme", params={"start_time": "2026-11-19T00:00:00Z"}))

    assert stats["requests"] == 3
    assert stats["amount"] == Decimal("7") and stats["cost"] == Decimal("4.5")
    assert [(m["model_name"], m["requests"], m["amount"]) for m in stats["by_model"]] == [
        ("gpt-4o", 2, Decimal("3")),
        ("claude", 1, Decimal("4")),
    ]
    assert [(d["day"], d["requests"]) for d in stats["by_day"]] == [
        (date(2026, 11, 19), 1),
        (date(2026, 11, 20), 2),
    ]
    assert {"rpm", "tpm"} <= set(stats)

    failed = usage_stats(query=native_query(org="acme", params={"status": "failed"}))
    assert failed["requests"] == 1 and failed["by_model"][0]["model_name"] == "claude"


def test_stats_days_follow_time_zone():
    make_usage(QUERY_RECORD, use_time=datetime(2026, 11, 19, 20, tzinfo=UTC))  # 2026-11-20 04:00 in Shanghai
    with override_settings(TIME_ZONE="Asia/Shanghai"):
        assert [d["day"] for d in usage_stats()["by_day"]] == [date(2026, 11, 20)]
    assert [d["day"] for d in usage_stats()["by_day"]] == [date(2026, 11, 19)]


def test_stats_refuse_bad_filters_naming_them():
    with pytest.raises(InvalidFilter) as error:
        usage_stats(query=native_query(params={"status": "meh", "end_time": "soon"}))
    assert set(error.value.errors) == {"status", "end_time"}
