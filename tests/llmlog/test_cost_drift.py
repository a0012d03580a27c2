"""The provider cost drift report (issue 20): GET /api/llmusage/cost-drift/ and the dashboard's section.
Every expected figure is computed here from the rows the test made."""

from collections import defaultdict
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.utils import timezone

from llmlog.dashboard import dashboard_context
from llmlog.models import LLMUsageHistory
from llmlog.queries import UsageQuery
from llmlog.selectors.drift import usage_cost_drift
from tests.conftest import bearer
from tests.factories import make_usage

pytestmark = pytest.mark.django_db

URL = "/api/llmusage/cost-drift/"
DAY_1 = datetime(2026, 11, 18, 12, 0, tzinfo=UTC)
DAY_2 = DAY_1 + timedelta(days=1)
RANGE = {"start_time": "2026-11-18T00:00:00Z", "end_time": "2026-11-21T00:00:00Z"}


def D(text: str) -> Decimal:  # noqa: N802 - reads as a literal
    return Decimal(text)


def record(when: datetime, provider: str, model: str, cost: str | None, reported: str | None, **fields: Any):
    return make_usage(
        use_time=when,
        provider=provider,
        model_name=model,
        cost=None if cost is None else D(cost),
        provider_cost=None if reported is None else D(reported),
        **fields,
    )


def expected_rows(records: list, threshold: Decimal) -> dict[tuple, dict[str, Any]]:
    """The report's rows computed from the records, by (day, provider, model)."""
    groups: dict[tuple, list] = defaultdict(list)
    for usage in records:
        groups[(timezone.localtime(usage.use_time).date(), usage.provider, usage.model_name)].append(usage)
    rows = {}
    for key, members in groups.items():
        both = [u for u in members if u.cost is not None and u.provider_cost is not None]
        if not both:
            continue
        cost = sum((u.cost for u in both), Decimal(0))
        reported = sum((u.provider_cost for u in both), Decimal(0))
        over = sum(1 for u in both if abs(u.provider_cost - u.cost) * 100 > threshold * u.cost)
        rows[key] = {
            "records": len(members),
            "records_with_both": len(both),
            "cost": cost,
            "provider_cost": reported,
            "delta": reported - cost,
            "delta_percent": ((reported - cost) / cost * 100).quantize(D("0.01")) if cost else None,
            "over_threshold": over,
            "over_share": (Decimal(over) / len(both)).quantize(D("0.0001")),
        }
    return rows


def answer_rows(answer: dict) -> dict[tuple, dict[str, Any]]:
    """The API's rows, by (day, provider, model), decimals read back from their strings."""
    rows = {}
    for row in answer["rows"]:
        key = (datetime.fromisoformat(row["day"]).date(), row["provider"], row["model_name"])
        rows[key] = {
            "records": row["records"],
            "records_with_both": row["records_with_both"],
            **{
                name: None if row[name] is None else Decimal(row[name])
                for name in ("cost", "provider_cost", "delta", "delta_percent", "over_share")
            },
            "over_threshold": row["over_threshold"],
        }
    return rows


@pytest.fixture
def mixed_records() -> list:
    """Two days, two providers, two models, two orgs; records without a reported or computed cost."""
    return [
        record(DAY_1, "openai", "gpt-4o", "1.00000", "1.05000"),  # 5 %: under
        record(DAY_1, "openai", "gpt-4o", "2.00000", "2.50000"),  # 25 %: over
        record(DAY_1, "openai", "gpt-4o", "0.50000", None),  # not reported: counted in records only
        record(DAY_1, "openai", "gpt-4o", None, "0.70000"),  # not priced yet: records only
        record(DAY_1, "bedrock", "claude", "0", "0.00100"),  # computed 0, reported not: over
        record(DAY_1, "bedrock", "claude", "0", "0"),  # both 0: not over
        record(DAY_2, "bedrock", "claude", "3.00000", "9.00000"),  # Bedrock 3x the bill
        record(DAY_2, "openai", "gpt-4o", "0.10000", "0.09000", userorgid="globex"),  # -10 %: not over
        record(DAY_2, "openai", "gpt-4o-mini", "0.40000", None),  # nothing reported: no row
        record(DAY_2 + timedelta(days=5), "openai", "gpt-4o", "1", "5"),  # outside the range
    ]


def test_rows_are_the_sums_of_the_records(api, platform_key, mixed_records):
    response = api.get(URL, RANGE, **bearer(platform_key))

    assert response.status_code == 200, response.content
    answer = response.json()
    assert answer["threshold_percent"] == "10.00"
    assert answer["truncated"] is False
    in_range = [u for u in mixed_records if u.use_time < datetime(2026, 11, 21, tzinfo=UTC)]
    assert answer_rows(answer) == expected_rows(in_range, Decimal(10))
    # newest day first, then provider and model
    assert [(row["day"], row["provider"], row["model_name"]) for row in answer["rows"]] == [
        ("2026-11-19", "bedrock", "claude"),
        ("2026-11-19", "openai", "gpt-4o"),
        ("2026-11-18", "bedrock", "claude"),
        ("2026-11-18", "openai", "gpt-4o"),
    ]
    first = answer["rows"][0]
    assert (first["cost"], first["provider_cost"], first["delta"]) == ("3.00000", "9.00000", "6.00000")
    assert (first["delta_percent"], first["over_threshold"], first["over_share"]) == ("200.00", 1, "1.0000")


def test_a_day_is_a_day_in_time_zone(api, platform_key, settings):
    settings.TIME_ZONE = "Asia/Tokyo"  # 18 Nov 20:00 UTC is 19 Nov 05:00 in Tokyo
    record(datetime(2026, 11, 18, 20, 0, tzinfo=UTC), "openai", "gpt-4o", "1", "2")

    answer = api.get(URL, **bearer(platform_key)).json()

    assert [row["day"] for row in answer["rows"]] == ["2026-11-19"]


def test_history_records_count_as_hot_ones(api, platform_key):
    hot = record(DAY_1, "openai", "gpt-4o", "1.00000", "1.20000")
    moved = make_usage(
        model=LLMUsageHistory, use_time=DAY_1, provider="openai", cost=D("2"), provider_cost=D("2.1")
    )

    answer = api.get(URL, RANGE, **bearer(platform_key)).json()

    assert answer_rows(answer) == expected_rows([hot, moved], Decimal(10))
    assert answer["rows"][0]["records"] == 2


@pytest.mark.parametrize(
    "threshold", [Decimal(10), Decimal("4.99"), Decimal("12.5"), Decimal(0), Decimal(300)]
)
def test_over_threshold_follows_the_setting(api, platform_key, settings, mixed_records, threshold):
    settings.LLMLOG_COST_DRIFT_ALERT = threshold

    answer = api.get(URL, RANGE, **bearer(platform_key)).json()

    assert Decimal(answer["threshold_percent"]) == threshold
    in_range = [u for u in mixed_records if u.use_time < datetime(2026, 11, 21, tzinfo=UTC)]
    expected = expected_rows(in_range, threshold)
    assert answer_rows(answer) == expected
    assert {key: row["over_threshold"] for key, row in expected.items()} == {
        (DAY_1.date(), "openai", "gpt-4o"): 2 if threshold < 5 else 1 if threshold < 25 else 0,
        (DAY_1.date(), "bedrock", "claude"): 1,  # computed 0, reported 0.001: over at any threshold
        (DAY_2.date(), "bedrock", "claude"): 1 if threshold < 200 else 0,
        (DAY_2.date(), "openai", "gpt-4o"): 1 if threshold < 10 else 0,
    }


def test_exactly_the_threshold_is_not_over(api, platform_key, settings):
    settings.LLMLOG_COST_DRIFT_ALERT = Decimal(10)
    record(DAY_1, "openai", "gpt-4o", "1.10000", "1.21000")  # exactly 10 % (inexact in a double)
    record(DAY_1, "openai", "gpt-4o", "0.30000", "0.33001")  # just past

    answer = api.get(URL, RANGE, **bearer(platform_key)).json()

    assert answer["rows"][0]["over_threshold"] == 1


def test_an_org_key_sees_its_org_only(api, acme_reader_key, globex_key, platform_key, mixed_records):
    acme = api.get(URL, RANGE, **bearer(acme_reader_key)).json()
    globex = api.get(URL, {**RANGE, "userorgid": "acme"}, **bearer(globex_key)).json()
    chosen = api.get(URL, {**RANGE, "userorgid": "globex"}, **bearer(platform_key)).json()

    in_range = [u for u in mixed_records if u.use_time < datetime(2026, 11, 21, tzinfo=UTC)]
    assert answer_rows(acme) == expected_rows([u for u in in_range if u.userorgid == "acme"], Decimal(10))
    assert globex["rows"] == []  # its own org's records only, whatever userorgid says: none of acme's
    assert [(row["day"], row["model_name"], row["cost"]) for row in chosen["rows"]] == [
        ("2026-11-19", "gpt-4o", "0.10000")
    ]


def test_filters_by_provider_and_model(api, platform_key, mixed_records):
    by_provider = api.get(URL, {**RANGE, "provider": "bedrock"}, **bearer(platform_key)).json()
    by_model = api.get(URL, {**RANGE, "model_name": "gpt-4o"}, **bearer(platform_key)).json()

    assert {row["provider"] for row in by_provider["rows"]} == {"bedrock"}
    assert len(by_provider["rows"]) == 2
    assert {row["model_name"] for row in by_model["rows"]} == {"gpt-4o"}
    assert len(by_model["rows"]) == 2


@pytest.mark.parametrize(
    ("params", "name"),
    [
        ({"start_time": "yesterday"}, "start_time"),
        ({"end_time": "2026-13-40"}, "end_time"),
        ({"provider": "x" * 65}, "provider"),
        ({"provider": "open\x00ai"}, "provider"),
        ({"status": "maybe"}, "status"),
    ],
)
def test_a_bad_parameter_is_a_400_naming_it(api, platform_key, params, name):
    response = api.get(URL, params, **bearer(platform_key))

    assert response.status_code == 400, response.content
    assert name in response.json()


def test_reading_needs_the_read_scope(api, make_key):
    ingest_only = make_key(org="acme", scopes=("ingest",))

    assert api.get(URL, **bearer(ingest_only)).status_code == 403
    assert api.get(URL).status_code == 401


def test_the_answer_is_bounded_and_says_when_it_was_cut(mixed_records):
    query = UsageQuery(start=DAY_1 - timedelta(hours=12), end=DAY_2 + timedelta(days=1))

    whole = usage_cost_drift(query=query)
    cut = usage_cost_drift(query=query, limit=3)

    assert (len(whole.rows), whole.truncated) == (4, False)
    assert (cut.rows, cut.truncated) == (whole.rows[:3], True)


def test_the_route_answers_without_its_trailing_slash_and_is_not_a_record_id(api, platform_key):
    response = api.get(URL.rstrip("/"), **bearer(platform_key))

    assert response.status_code == 200, response.content
    assert response.json()["rows"] == []


def test_openapi_lists_the_endpoint(api):
    schema = api.get("/api/schema/?format=json").json()

    operation = schema["paths"]["/api/llmusage/cost-drift/"]["get"]
    names = {parameter["name"] for parameter in operation["parameters"]}
    assert {"start_time", "end_time", "userorgid", "model_name", "provider"} <= names
    assert {"200", "400"} <= set(operation["responses"])
    row = schema["components"]["schemas"]["CostDriftRow"]["properties"]
    assert row["delta"]["format"] == "decimal" and row["delta_percent"]["nullable"] is True


def test_dashboard_lists_the_largest_drift_first(admin_client):
    now = timezone.now()
    record(now - timedelta(days=2), "openai", "gpt-4o", "1.00000", "1.50000")
    record(now - timedelta(days=1), "bedrock", "claude", "3.00000", "1.00000")  # -2: the largest |delta|
    record(now, "openai", "gpt-4o-mini", "0.10000", "0.10000")
    record(now - timedelta(days=40), "openai", "gpt-4o", "1", "100")  # before the 30 days

    drift = dashboard_context(params={}, now=now)["drift"]

    assert [(row["model_name"], row["delta"]) for row in drift["rows"]] == [
        ("claude", D("-2.00000")),
        ("gpt-4o", D("0.50000")),
        ("gpt-4o-mini", D("0.00000")),
    ]
    page = admin_client.get("/admin/dashboard/")
    assert page.status_code == 200
    text = page.content.decode()
    assert "Provider cost drift" in text and 'id="drift"' in text and "-2.00000" in text
