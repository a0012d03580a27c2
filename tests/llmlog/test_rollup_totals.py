"""Totals answered from the hourly rollups equal the rows' totals, whatever happened in between: hour
edges, time zones (one with a 30-minute offset), the nightly move, a change of TIME_ZONE, posting-time
pricing, edits, deletes, a purge and an hour whose rebuild failed."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from accounting.models import AccountingFailure
from llmlog.backup import backup_accounted_llmusage
from llmlog.edits import usage_delete, usage_update
from llmlog.filters import native_query
from llmlog.models import LLMUsage, ModelPrice, UsageRollupStale
from llmlog.posting import account_pending_usage, retry_failed_accounting
from llmlog.queries import UsageQuery
from llmlog.retention import usage_delete_before
from llmlog.rollups import build_usage_rollups, floor_hour
from llmlog.selectors.records import usage_matching
from llmlog.selectors.stats import usage_stats
from llmlog.selectors.sums import usage_totals
from llmlog.selectors.totals import usage_count, usage_total
from tests.conftest import bearer
from tests.factories import insert_usage, make_accounts, make_usage, usage_payload, usage_row

pytestmark = pytest.mark.django_db

NOW = floor_hour(timezone.now())
SUMMED = ("requests", "input_tokens", "output_tokens", "total_tokens", "amount", "cost")


def hour(n: int) -> datetime:
    """The start of the UTC hour n hours before the current one."""
    return NOW - timedelta(hours=n)


def exact(query: UsageQuery, *, rollups: bool = True) -> dict:
    """usage_count and usage_total of `query` checked against the rows, and that the rollups answered
    (their table read, rollup_hours set) when `rollups`; returns the total."""
    with CaptureQueriesContext(connection) as queries:
        count = usage_count(query=query)
        total = usage_total(query=query)
    rows = usage_totals(queryset=usage_matching(query=query))
    assert count == {"count": rows["requests"], "estimated": False}
    assert {name: total[name] for name in SUMMED} == {name: rows[name] for name in SUMMED}
    read_buckets = any('"llmusage_rollup"' in q["sql"] for q in queries.captured_queries)
    assert read_buckets is rollups and (total["rollup_hours"] is not None) is rollups
    return total


def edge_records() -> None:
    """Records on both sides of hour edges: the last moment of an hour and the first of the next."""
    for n in (30, 6, 5, 2):
        make_usage(use_time=hour(n) - timedelta(milliseconds=1), amount=Decimal("0.10001"))
        make_usage(use_time=hour(n), amount=Decimal("0.20002"), status="failed")
        make_usage(use_time=hour(n) + timedelta(minutes=30), userorgid="globex", model_name="claude")
    make_usage(use_time=NOW + timedelta(seconds=1))  # the open hour


def test_totals_across_hour_edges_equal_the_rows():
    edge_records()
    build_usage_rollups()

    exact(UsageQuery())  # every record: exact from the rollups, not an estimate
    exact(UsageQuery(org="acme"))
    exact(UsageQuery(start=hour(6), end=hour(2)))
    exact(UsageQuery(start=hour(6) - timedelta(milliseconds=1), end=hour(2) + timedelta(milliseconds=1)))
    exact(UsageQuery(start=hour(30) + timedelta(seconds=1), status="failed"))
    exact(UsageQuery(userorgid="globex", model_name="claude", end=hour(5)))
    total = exact(UsageQuery(org="acme", start=hour(7)))
    assert total["rollup_hours"] == [hour(7), floor_hour(timezone.now() - timedelta(minutes=10))]


def test_a_query_the_rollups_cannot_carry_is_counted_from_the_rows():
    edge_records()
    build_usage_rollups()

    exact(UsageQuery(feature="chat"), rollups=False)
    exact(UsageQuery(start=hour(6), end=hour(6) + timedelta(minutes=40)), rollups=False)  # no whole hour


def test_totals_in_a_zone_with_a_half_hour_offset(settings):
    settings.TIME_ZONE = "Asia/Kolkata"  # UTC+05:30: its days start at :30 past a UTC hour
    edge_records()
    build_usage_rollups()
    day = timezone.localdate(hour(5))
    start = timezone.make_aware(datetime.combine(day, datetime.min.time()))

    exact(native_query(org="acme", params={"start_time": start.isoformat()}))
    stats = usage_stats(query=UsageQuery(start=start))
    assert stats["requests"] == usage_matching(query=UsageQuery(start=start)).count()
    assert sum(entry["requests"] for entry in stats["by_day"]) == stats["requests"]


def test_the_nightly_move_changes_no_total():
    for n in (50, 49, 30):
        make_usage(use_time=hour(n), accounting_status="accounted", amount=Decimal("1.5"))
    build_usage_rollups()
    before = exact(UsageQuery(org="acme", start=hour(60)))

    assert backup_accounted_llmusage()["moved"] >= 1

    assert exact(UsageQuery(org="acme", start=hour(60))) == before


def test_a_use_date_query_counts_each_record_once_after_time_zone_changes(settings):
    # Stamped in UTC: the records of 20:00-23:59 UTC have use_date D.
    day_start = datetime.combine(timezone.localdate(hour(72)), datetime.min.time(), tzinfo=UTC)
    for minutes in range(0, 24 * 60, 90):
        make_usage(use_time=day_start + timedelta(minutes=minutes))
    build_usage_rollups()
    settings.TIME_ZONE = "Asia/Kolkata"  # day D now starts 5.5 hours earlier
    query = native_query(org="acme", params={"use_date": day_start.date().isoformat()})

    stats = usage_stats(query=query)

    assert stats["requests"] == 16 == usage_count(query=query)["count"]
    assert stats["rollup_hours"] is None  # the column, read from the rows
    exact(query, rollups=False)


def test_posting_time_pricing_refreshes_its_hour(django_capture_on_commit_callbacks):
    make_accounts()
    (unpriced,) = insert_usage([usage_row(amount=None, cost=None, model_name="new-model", use_time=hour(4))])
    account_pending_usage()  # no price yet: fails, stays unpriced
    build_usage_rollups()
    query = UsageQuery(org="acme", start=hour(8))
    assert exact(query)["amount"] == 0
    ModelPrice.objects.create(
        model_name="new-model",
        kind="sale",
        effective_from=datetime(2020, 1, 1, tzinfo=UTC),
        input_price=Decimal("1"),
        output_price=Decimal("2"),
    )
    with django_capture_on_commit_callbacks(execute=False) as rebuilds:
        retry_failed_accounting(ids=[AccountingFailure.objects.get(usage_id=unpriced).pk])
    # Priced and committed, not rebuilt yet: the hour is marked and its rows answer.
    assert UsageRollupStale.objects.filter(hour=hour(4)).exists()
    priced = exact(query)["amount"]
    assert priced > 0

    for rebuild in rebuilds:
        rebuild()

    assert not UsageRollupStale.objects.exists()
    assert exact(query)["amount"] == priced


def test_edits_and_deletes_keep_totals_exact(django_capture_on_commit_callbacks):
    edited = make_usage(use_time=hour(5) + timedelta(minutes=5), amount=Decimal("1"))
    moved = make_usage(use_time=hour(5) + timedelta(minutes=6))
    gone = make_usage(use_time=hour(3), accounting_status="failed")
    build_usage_rollups()
    query = UsageQuery(org="acme", start=hour(10))

    with django_capture_on_commit_callbacks(execute=False) as rebuilds:
        usage_update(
            id=edited.pk,
            changes={"amount": Decimal("7"), "output_tokens": 900, "total_tokens": 1000},
            actor="t",
        )
        usage_update(id=moved.pk, changes={"use_time": hour(2) + timedelta(minutes=1)}, actor="t")
        usage_delete(id=gone.pk, actor="t")
    assert exact(query)["amount"] == Decimal("7.01")  # marked hours, read from the rows
    assert set(UsageRollupStale.objects.values_list("hour", flat=True)) == {hour(5), hour(3), hour(2)}

    for rebuild in rebuilds:
        rebuild()

    assert not UsageRollupStale.objects.exists()
    assert exact(query)["requests"] == 2


def test_new_apis_delete_marks_each_batch_and_rebuilds():
    edge_records()
    LLMUsage.objects.update(accounting_status="accounted")
    build_usage_rollups()

    usage_delete_before(before=hour(4), batch_size=2)

    assert not UsageRollupStale.objects.exists()
    exact(UsageQuery())


def test_an_hour_that_failed_to_build_is_read_from_its_rows():
    bad = hour(5)
    for _ in range(2):  # their token sum is past a 64-bit bucket
        make_usage(use_time=bad + timedelta(minutes=10), input_tokens=2**62, output_tokens=0, cached_tokens=0)
    make_usage(use_time=hour(3))

    counts = build_usage_rollups()

    assert counts["failed_hours"] and UsageRollupStale.objects.get(hour=bad).error
    assert usage_count(query=UsageQuery(org="acme"))["count"] == 3
    assert usage_count(query=UsageQuery(start=bad, end=bad + timedelta(hours=1)))["count"] == 2


@pytest.mark.parametrize("records", [1, 3], ids=["single", "bulk"])
def test_a_late_record_counts_in_the_totals_at_once_without_a_rebuild(api, platform_key, records):
    """A record of an hour the build already summed: its hour reads rows from the ingest's commit on,
    not short buckets until the next scan."""
    edge_records()
    build_usage_rollups()
    late = [
        usage_payload(use_time=(hour(5) + timedelta(minutes=20)).isoformat(), userorgid="acme", amount="0.5")
        for _ in range(records)
    ]

    response = api.post(
        "/api/llmusage/", data=late[0] if records == 1 else late, format="json", **bearer(platform_key)
    )

    assert response.status_code == 201, response.content
    assert UsageRollupStale.objects.filter(hour=hour(5)).exists()
    exact(UsageQuery(org="acme", start=hour(7)))  # its hour read from the rows, as the mark says
    build_usage_rollups()
    assert not UsageRollupStale.objects.filter(hour=hour(5)).exists()
    exact(UsageQuery(org="acme", start=hour(7)))
