"""GET /api/exports/focus/?month=YYYY-MM: the ledger's charges of a month as FOCUS 1.2 CSV, one row per
org, model and day in TIME_ZONE, over hot and history, streamed; an org key exports its own org."""

import csv
import io
from collections import Counter
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from django.db.models import Q, Sum

from accounting.models import LedgerTransaction
from llmlog.exports.focus import FOCUS_COLUMNS, X_COLUMNS, focus_groups
from llmlog.exports.period import InvalidPeriod, month_period
from llmlog.models import ModelPrice, UsageAll
from llmlog.posting import account_pending_usage
from llmlog.replicas import reading_from
from llmlog.repricing import repricing_create
from tests.factories import make_accounts, make_usage, move_to_history

pytestmark = pytest.mark.django_db

URL = "/api/exports/focus/"
ZONE = "America/New_York"  # UTC-5 in November: a day there is 05:00 to 05:00 UTC
NY = ZoneInfo(ZONE)


def at(day: int, hour: int, minute: int = 0, *, month: int = 11) -> datetime:
    """A time in New York, November 2026 unless told."""
    return datetime(2026, month, day, hour, minute, tzinfo=NY)


def read_csv(response) -> list[dict[str, str]]:
    assert response.status_code == 200, response.content[:300]
    assert response.streaming, "the export must stream"
    assert response["Content-Type"].startswith("text/csv")
    text = b"".join(response.streaming_content).decode("utf-8")
    reader = csv.DictReader(io.StringIO(text))
    assert tuple(reader.fieldnames) == FOCUS_COLUMNS
    return list(reader)


def get(api, key: str, **params: str):
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    return api.get(URL, params)


@pytest.fixture
def month_of_charges(settings) -> dict[str, list]:
    """November 2026 in New York: acme and globex records on two days and two models, posted to the
    ledger, some moved to history; records that must stay out: just before and after the month, one
    whose posting failed (no account), one still pending."""
    settings.TIME_ZONE = ZONE
    make_accounts(customers=("acme", "globex"), owners=("openai", "anthropic"))
    inside = [
        make_usage(userorgid="acme", use_time=at(1, 0, 0), amount=Decimal("0.01234"), input_tokens=1000),
        make_usage(userorgid="acme", use_time=at(1, 23, 59), amount=Decimal("1.10001"), cached_tokens=40),
        make_usage(userorgid="acme", use_time=at(2, 12), model_name="claude", ownerid="anthropic"),
        make_usage(userorgid="acme", use_time=at(30, 23, 59), amount=Decimal("2.50000"), reasoning_tokens=9),
        make_usage(userorgid="globex", use_time=at(1, 8), amount=Decimal("777.00001")),
        make_usage(userorgid="globex", use_time=at(15, 8), amount=Decimal("0"), cost=Decimal("0")),
    ]
    outside = [
        make_usage(userorgid="acme", use_time=at(31, 23, 59, month=10)),
        make_usage(userorgid="acme", use_time=at(1, 0, 0, month=12)),
    ]
    failed = make_usage(userorgid="initech", use_time=at(3, 9))  # no account: the posting fails
    account_pending_usage()
    pending = make_usage(userorgid="acme", use_time=at(4, 9))
    move_to_history(inside[0].pk, inside[4].pk)
    statuses = dict(UsageAll.objects.values_list("id", "accounting_status"))
    assert statuses[failed.pk] == "failed" and statuses[pending.pk] == "pending"
    assert {statuses[record.pk] for record in inside} <= {"accounted", "skipped"}
    return {"inside": inside, "outside": outside, "not_charged": [failed, pending]}


def test_billed_cost_sums_to_the_ledgers_usage_charges_of_the_month(api, platform_key, month_of_charges):
    rows = read_csv(get(api, platform_key, month="2026-11"))

    period = month_period("2026-11")
    of_the_month = UsageAll.objects.filter(use_time__gte=period.start, use_time__lt=period.end)
    charges = LedgerTransaction.objects.filter(
        kind=LedgerTransaction.Kind.USAGE, usage_id__in=of_the_month.values("id")
    ).aggregate(total=Sum("amount"))["total"]
    billed = sum(Decimal(row["BilledCost"]) for row in rows)
    assert billed == charges == Decimal("780.62236")
    assert {row["ChargeCategory"] for row in rows} == {"Usage"}
    assert all(row["ListCost"] == row["EffectiveCost"] == row["BilledCost"] for row in rows)


def test_the_bill_reads_the_primary_where_the_reads_around_it_go_to_a_replica(month_of_charges):
    period = month_period("2026-11")
    with reading_from("unreachable-replica"):  # a read that chose a replica around the export
        groups = list(focus_groups(period=period))  # on that alias it would raise: no such database

    assert sum(group.amount for group in groups) == Decimal("780.62236")


def test_one_row_per_org_model_and_day_in_time_zone(api, platform_key, month_of_charges):
    rows = read_csv(get(api, platform_key, month="2026-11"))

    keys = [(row["SubAccountId"], row["ResourceId"], row["ChargePeriodStart"]) for row in rows]
    assert Counter(keys).most_common(1)[0][1] == 1
    assert keys == [
        ("acme", "gpt-4o", "2026-11-01T04:00:00Z"),  # New York is UTC-4 until 1 November, 02:00
        ("globex", "gpt-4o", "2026-11-01T04:00:00Z"),
        ("acme", "claude", "2026-11-02T05:00:00Z"),
        ("globex", "gpt-4o", "2026-11-15T05:00:00Z"),
        ("acme", "gpt-4o", "2026-11-30T05:00:00Z"),
    ]
    first = rows[0]
    assert first["ChargePeriodEnd"] == "2026-11-02T05:00:00Z"  # the day the clocks went back: 25 hours
    assert first["BillingPeriodStart"] == "2026-11-01T04:00:00Z"
    assert first["BillingPeriodEnd"] == "2026-12-01T05:00:00Z"
    # two records of 1 November in New York (one at 23:59 there, 04:59 UTC the next day), one in history
    assert first["x_Requests"] == "2"
    assert first["BilledCost"] == "1.11235"
    assert first["x_InputTokens"] == "1100" and first["x_OutputTokens"] == "100"
    assert first["x_CachedTokens"] == "40"
    assert first["ConsumedQuantity"] == first["PricingQuantity"] == "1200"
    assert first["ConsumedUnit"] == first["PricingUnit"] == "Tokens"
    assert first["ServiceCategory"] == "AI and Machine Learning"
    assert first["ChargeFrequency"] == "Usage-Based"
    assert first["BillingCurrency"] == "USD"
    assert first["ProviderName"] == first["InvoiceIssuerName"] == "llmlog"
    assert rows[-1]["x_ReasoningTokens"] == "9"
    assert set(X_COLUMNS.values()) <= set(first)


def test_an_org_key_exports_its_own_org_only(api, make_key, month_of_charges):
    rows = read_csv(get(api, make_key(org="acme", role="reader", scopes=("read",)), month="2026-11"))
    assert {row["SubAccountId"] for row in rows} == {"acme"}
    assert "777" not in "".join(row["BilledCost"] for row in rows)

    other = read_csv(get(api, make_key(org="acme"), month="2026-11", userorgid="globex"))
    assert other == []  # another org's records are not there to find


def test_the_platform_may_name_one_org(api, platform_key, month_of_charges):
    rows = read_csv(get(api, platform_key, month="2026-11", userorgid="globex"))
    assert [row["BilledCost"] for row in rows] == ["777.00001", "0.00000"]


def test_an_empty_month_is_the_header_alone(api, platform_key, month_of_charges):
    assert read_csv(get(api, platform_key, month="2026-09")) == []


@pytest.mark.parametrize("month", ["", "2026-13", "2026-00", "2026-1", "11-2026", "1999-12", "2026-11-01"])
def test_a_bad_month_is_a_400_naming_it(api, platform_key, month):
    response = get(api, platform_key, month=month)
    assert response.status_code == 400
    assert "month" in response.json()


def test_a_missing_month_is_a_400_naming_it(api, platform_key):
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {platform_key}")
    response = api.get(URL)
    assert response.status_code == 400 and "month" in response.json()


def test_errors_are_json_even_to_a_client_that_accepts_only_csv(api, platform_key):
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {platform_key}")
    response = api.get(URL, {"month": "x"}, HTTP_ACCEPT="text/csv")
    assert response.status_code == 400 and "month" in response.json()
    assert read_csv(api.get(URL, {"month": "2026-11"}, HTTP_ACCEPT="text/csv")) == []


def test_no_key_is_a_401_and_a_key_without_read_a_403(api, make_key):
    assert api.get(URL, {"month": "2026-11"}).status_code == 401
    response = get(api, make_key(org="acme", scopes=("ingest",)), month="2026-11")
    assert response.status_code == 403


def test_text_that_would_start_a_formula_is_neutralised(api, platform_key, settings):
    settings.TIME_ZONE = ZONE
    make_accounts(customers=("=cmd",), owners=("openai",))
    make_usage(userorgid="=cmd", model_name="@SUM(A1)", use_time=at(5, 12))
    account_pending_usage()
    (row,) = read_csv(get(api, platform_key, month="2026-11"))
    assert row["SubAccountId"] == "'=cmd" and row["ResourceId"] == "'@SUM(A1)"
    assert row["ChargeDescription"].startswith("'@SUM(A1) usage on 2026-11-05")


def test_the_export_reads_the_month_in_two_grouped_queries(
    api, platform_key, month_of_charges, django_assert_max_num_queries
):
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {platform_key}")
    with django_assert_max_num_queries(4):  # the key, the charges grouped, the adjustments grouped
        response = api.get(URL, {"month": "2026-11"})
        lines = b"".join(response.streaming_content).splitlines()
    assert len(lines) == 6


def test_month_period_bounds_are_the_zones_midnights():
    period = month_period("2026-03", zone=ZoneInfo("Europe/Paris"))
    assert period.start == datetime(2026, 2, 28, 23, tzinfo=UTC)
    assert period.end == datetime(2026, 3, 31, 22, tzinfo=UTC)
    # (in UTC: Python subtracts two times of one zone by their wall clocks)
    assert period.end.astimezone(UTC) - period.start.astimezone(UTC) == timedelta(days=31, hours=-1)
    with pytest.raises(InvalidPeriod, match="YYYY-MM"):
        month_period("March")


def test_repricing_adjustments_are_rows_of_the_month_the_ledger_posted_them(api, platform_key, settings):
    """Applied on 2 December, a re-pricing of November's and December's usage: December's file holds
    both adjustments (November's as a correction of November's bill); November's file has none."""
    settings.TIME_ZONE = ZONE
    make_accounts(customers=("acme",), owners=("openai",))
    november = make_usage(use_time=at(10, 12), input_tokens=100, output_tokens=50)  # 0.01 charged
    december = make_usage(use_time=at(1, 10, month=12), input_tokens=100, output_tokens=50)
    account_pending_usage()
    for kind, unit in (("sale", "10"), ("cost", "5")):  # per 1M tokens; output twice the input
        ModelPrice.objects.create(
            model_name="gpt-4o",
            kind=kind,
            ownerid="openai",
            effective_from=datetime(2026, 1, 1, tzinfo=UTC),
            input_price=Decimal(unit),
            output_price=2 * Decimal(unit),
        )
    posted = at(2, 10, month=12)
    repricing_create(start=date(2026, 11, 1), end=date(2026, 12, 31), apply=True, now=posted)

    rows = read_csv(get(api, platform_key, month="2026-12"))

    usage, *adjustments = rows
    assert usage["ChargeCategory"] == "Usage" and usage["BilledCost"] == "0.01000"
    assert [(row["ChargeCategory"], row["ChargeClass"], row["ChargePeriodStart"]) for row in adjustments] == [
        ("Adjustment", "Correction", "2026-11-10T05:00:00Z"),
        ("Adjustment", "", "2026-12-01T05:00:00Z"),
    ]
    # 100 x 10 / 1M + 50 x 20 / 1M = 0.002 instead of 0.01
    assert [row["BilledCost"] for row in adjustments] == ["-0.00800", "-0.00800"]
    assert all(row["ConsumedQuantity"] == row["x_InputTokens"] == "" for row in adjustments)
    period = month_period("2026-12")
    ledger = LedgerTransaction.objects.filter(
        Q(kind="usage", usage_id__in=[december.pk]) | Q(kind="adjustment", created_at__gte=period.start)
    ).aggregate(total=Sum("amount"))["total"]
    assert sum(Decimal(row["BilledCost"]) for row in rows) == ledger == Decimal("-0.00600")
    (november_row,) = read_csv(get(api, platform_key, month="2026-11"))
    assert november_row["ChargeCategory"] == "Usage"
    assert november_row["ChargePeriodStart"] == f"{november.use_time:%Y-%m-%d}T05:00:00Z"
