"""provider_cost (issue 20): what the gateway or provider reported a call cost, kept beside the computed
`cost` from native ingest and the adapters, through the move to history, in the APIs, admin and CSV."""

import csv
import io
import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.urls import reverse
from django.utils import timezone

from llmlog.backup import backup_accounted_llmusage
from llmlog.models import LLMUsage, LLMUsageHistory, ModelPrice
from tests.conftest import bearer
from tests.factories import make_usage, org_payload, usage_payload
from tests.llmlog.test_adapter_litellm import litellm_record
from tests.llmlog.test_adapter_otlp import CHAT, export_body, make_spans

pytestmark = pytest.mark.django_db

LITELLM = "/api/ingest/litellm/"
SINCE_2020 = datetime(2020, 1, 1, tzinfo=UTC)


def _post(api, key: str, body, url: str = "/api/llmusage/"):
    return api.post(url, data=json.dumps(body), content_type="application/json", **bearer(key))


def _cost_price(**prices) -> ModelPrice:
    """gpt-4o's cost price: 1 per 1M input, 2 per 1M output unless given."""
    fields = {"input_price": Decimal(1), "output_price": Decimal(2), **prices}
    return ModelPrice.objects.create(model_name="gpt-4o", kind="cost", effective_from=SINCE_2020, **fields)


# --- native ingest ---------------------------------------------------------------------------------


def test_native_ingest_keeps_the_reported_cost_beside_the_stated_one(api, platform_key):
    response = _post(api, platform_key, usage_payload(provider_cost="0.00512"))

    assert response.status_code == 201, response.content
    assert response.json()["provider_cost"] == "0.00512"
    usage = LLMUsage.objects.get()
    assert (usage.cost, usage.provider_cost) == (Decimal("0.00480"), Decimal("0.00512"))


def test_an_org_key_may_state_the_provider_cost_which_moves_no_money(api, acme_key):
    _cost_price()

    response = _post(api, acme_key, org_payload(provider_cost=3))

    assert response.status_code == 201, response.content
    usage = LLMUsage.objects.get()
    assert usage.provider_cost == Decimal(3)
    assert usage.cost == Decimal("0.00180")  # 1200 input at 1/M + 300 output at 2/M, from the book


def test_a_record_without_a_reported_cost_has_none(api, platform_key):
    _post(api, platform_key, usage_payload())

    assert LLMUsage.objects.get().provider_cost is None


@pytest.mark.parametrize("value", ["-1", "1e3", " 1", "abc", -0.5, 1000001, "NaN", True])
def test_a_bad_provider_cost_is_a_400_naming_it(api, acme_key, value):
    response = _post(api, acme_key, org_payload(provider_cost=value))

    assert response.status_code == 400, response.content
    assert "provider_cost" in response.json()["errors"]
    assert not LLMUsage.objects.exists()


# --- adapters --------------------------------------------------------------------------------------


def test_litellm_response_cost_is_the_provider_cost_and_the_book_makes_the_cost(api, platform_key):
    _cost_price()

    response = _post(api, platform_key, [litellm_record(response_cost=0.00125)], url=LITELLM)

    assert response.status_code == 201, response.content
    usage = LLMUsage.objects.get()
    assert usage.provider_cost == Decimal("0.00125")
    assert usage.cost == Decimal("0.00020")  # 100 input at 1/M + 50 output at 2/M
    assert usage.amount == Decimal("0.00125")  # no sale price: charged at the gateway's cost
    assert usage.price["cost"]["input_price"] == "1.00000"


def test_litellm_without_a_cost_price_takes_the_reported_cost_as_cost_too(api, platform_key):
    _post(api, platform_key, [litellm_record(response_cost="0.00125")], url=LITELLM)

    usage = LLMUsage.objects.get()
    assert usage.cost == usage.provider_cost == usage.amount == Decimal("0.00125")


def test_litellm_org_key_reported_cost_is_only_the_provider_cost(api, acme_key):
    _cost_price()

    response = _post(api, acme_key, [litellm_record(response_cost=7)], url=LITELLM)

    assert response.status_code == 201, response.content
    usage = LLMUsage.objects.get()
    assert (usage.provider_cost, usage.cost, usage.amount) == (Decimal(7), Decimal("0.00020"), None)
    assert "reported_cost" not in usage.metadata


def test_litellm_cost_it_could_not_compute_is_no_provider_cost(api, platform_key):
    record = litellm_record(response_cost=0.0, response_cost_failure_debug_info={"error": "no model"})

    _post(api, platform_key, [record], url=LITELLM)

    assert LLMUsage.objects.get().provider_cost is None


def test_a_litellm_response_cost_past_the_bound_is_an_item_error_naming_it(api, platform_key):
    records = [litellm_record(response_cost=1000001), litellm_record()]

    response = _post(api, platform_key, records, url=LITELLM)

    assert response.status_code == 207, response.content
    assert "response_cost" in response.json()["items"][0]["errors"]
    assert LLMUsage.objects.count() == 1


@pytest.mark.parametrize("attribute", ["gen_ai.cost.total_cost", "gen_ai.usage.cost"])
def test_otlp_span_cost_is_the_provider_cost(api, acme_key, attribute):
    body = export_body(make_spans(("chat", {**CHAT, attribute: 0.0042})))

    response = api.post("/v1/traces", data=body, content_type="application/x-protobuf", **bearer(acme_key))

    assert response.status_code == 200, response.content
    assert LLMUsage.objects.get().provider_cost == Decimal("0.00420")


# --- the move, the APIs, admin, CSV ----------------------------------------------------------------


def test_the_nightly_move_keeps_the_provider_cost_and_the_apis_show_it(api, acme_key):
    yesterday = timezone.now() - timedelta(days=1)
    record = make_usage(use_time=yesterday, accounting_status="accounted", provider_cost=Decimal("0.00900"))

    assert backup_accounted_llmusage()["moved"] == 1

    moved = LLMUsageHistory.objects.get(pk=record.pk)
    assert moved.provider_cost == Decimal("0.00900")
    for url in (f"/api/llmusage/{record.pk}/", f"/api/llmusage-history/{record.pk}/"):
        answer = api.get(url, **bearer(acme_key))
        assert answer.status_code == 200, answer.content
        assert answer.json()["provider_cost"] == "0.00900"
    listed = api.get("/api/llmusage/", **bearer(acme_key)).json()["results"]
    assert [row["provider_cost"] for row in listed] == ["0.00900"]


def test_the_openapi_schema_shows_the_provider_cost(api):
    schema = api.get("/api/schema/?format=json").json()

    for component in ("UsageAll", "LLMUsage", "LLMUsageHistory"):
        field = schema["components"]["schemas"][component]["properties"]["provider_cost"]
        assert field["type"] == "string" and field["format"] == "decimal" and field["nullable"] is True
    native = json.dumps(schema["paths"]["/api/llmusage/"]["post"]["requestBody"])
    assert "provider_cost" in native


def test_admin_detail_and_csv_export_show_the_provider_cost(admin_client):
    record = make_usage(provider_cost=Decimal("0.01234"))
    make_usage()  # not reported: an empty cell, 0 in the total

    page = admin_client.get(reverse("admin:llmlog_llmusage_change", args=[record.pk]))
    assert page.status_code == 200
    assert "provider_cost" in page.content.decode() and "0.01234" in page.content.decode()

    export = admin_client.get(reverse("admin:llmlog_llmusage_export_csv"))
    text = b"".join(export.streaming_content).decode("utf-8-sig")
    rows = list(csv.DictReader(io.StringIO(text)))
    title = next(name for name in rows[0] if "provider" in name.lower() and "cost" in name.lower())
    assert sorted(row[title] for row in rows[:-1]) == ["", "0.01234"]
    assert Decimal(rows[-1][title]) == Decimal("0.01234")  # the totals row
