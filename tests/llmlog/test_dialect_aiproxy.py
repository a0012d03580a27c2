"""AI Proxy's log search (seeds/aiproxy-log-search-api.txt): /api/logs/search, /api/log/{group}/search."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.db import connection

from llmlog.models import ModelPrice, UsageAll
from tests.conftest import bearer
from tests.dialect_schemas import dialect_answers_match_the_seeds  # noqa: F401 - autouse: every answer checked
from tests.factories import ingest_records, move_to_history, usage_payload

pytestmark = pytest.mark.django_db

# The seed's log object, field for field.
LOG_FIELDS = {
    "channel", "code", "content", "created_at", "endpoint", "group", "id", "ip", "metadata", "mode", "model",
    "price", "request_at", "request_detail", "request_id", "retry_at", "retry_times", "token_id",
    "token_name", "ttfb_milliseconds", "usage", "used_amount", "user",
}  # fmt: skip
PRICE_FIELDS = {
    "cache_creation_price", "cache_creation_price_unit", "cached_price", "cached_price_unit",
    "image_input_price", "image_input_price_unit", "input_price", "input_price_unit", "output_price",
    "output_price_unit", "per_request_price", "thinking_mode_output_price", "thinking_mode_output_price_unit",
    "web_search_price", "web_search_price_unit",
}  # fmt: skip
USAGE_FIELDS = {
    "cache_creation_tokens", "cached_tokens", "image_input_tokens", "input_tokens", "output_tokens",
    "reasoning_tokens", "total_tokens", "web_search_count",
}  # fmt: skip
T0 = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)


def seq_of(record_id: str) -> int:
    return UsageAll.objects.get(pk=record_id).seq


def at(seconds: float) -> str:
    return (T0 + timedelta(seconds=seconds)).isoformat()


def ms(seconds: float = 0) -> int:
    return int((T0 + timedelta(seconds=seconds)).timestamp() * 1000)


def search(api, key: str, path: str = "/api/logs/search", **params) -> dict:
    response = api.get(path, params, **bearer(key))
    assert response.status_code == 200, response.json()
    return response.json()


def test_search_answers_the_seed_shape(api, acme_key):
    [record_id] = ingest_records(
        usage_payload(
            use_time=at(0),
            transno="req-1",
            userid="user-1",
            token_id="7",
            token_name="prod-token",
            channel_id="3",
            endpoint="/v1/chat/completions",
            request_ip="10.0.0.1",
            responsed_seconds=0.42,
            input_tokens=1000,
            cached_tokens=200,
            cache_creation_tokens=100,
            output_tokens=300,
            reasoning_tokens=50,
            web_search_count=1,
            amount="0.01234",
            retry_times=1,
            metadata={"trace": "abc"},
            ioinfo={"request": {"messages": [{"role": "user", "content": "hi"}]}, "response": "hello"},
        )
    )

    answer = search(
        api,
        acme_key,
        page=1,
        per_page=10,
        model_name="gpt-4o",
        start_timestamp=ms(-60),
        end_timestamp=ms(60),
        code_type="all",
    )

    assert (answer["success"], answer["message"]) == (True, "")
    assert set(answer["data"]) == {"logs", "total", "models", "token_names", "channels"}
    assert answer["data"]["total"] == 1
    [log] = answer["data"]["logs"]
    assert set(log) == LOG_FIELDS
    assert set(log["price"]) == PRICE_FIELDS
    assert set(log["usage"]) == USAGE_FIELDS
    assert log["id"] == seq_of(record_id)  # the record's sequential number, an integer as AI Proxy's
    assert (log["request_id"], log["user"], log["group"], log["model"]) == (
        "req-1",
        "user-1",
        "acme",
        "gpt-4o",
    )
    assert (log["token_id"], log["token_name"], log["channel"]) == (7, "prod-token", 3)
    assert (log["code"], log["content"], log["mode"], log["endpoint"]) == (200, "", 1, "/v1/chat/completions")
    assert log["ttfb_milliseconds"] == 420
    assert log["used_amount"] == pytest.approx(0.01234)
    assert log["usage"] == {
        "cache_creation_tokens": 100,
        "cached_tokens": 200,
        "image_input_tokens": 0,
        "input_tokens": 1000,
        "output_tokens": 300,
        "reasoning_tokens": 50,
        "total_tokens": 1300,
        "web_search_count": 1,
    }
    assert datetime.fromisoformat(log["request_at"]) == T0
    assert log["retry_times"] == 1 and log["retry_at"] == ""
    assert log["metadata"] == {"trace": "abc"}
    assert log["ip"] == "10.0.0.1"
    assert log["request_detail"] == {
        "id": seq_of(record_id),
        "log_id": seq_of(record_id),
        "request_body": '{"messages":[{"role":"user","content":"hi"}]}',
        "request_body_truncated": False,
        "response_body": "hello",
        "response_body_truncated": False,
    }
    assert answer["data"]["models"] == ["gpt-4o"]
    assert answer["data"]["token_names"] == ["prod-token"]
    assert answer["data"]["channels"] == [3]


def test_request_detail_says_which_side_was_truncated(api, acme_key, settings):
    settings.LLMLOG_IO_LIMIT = 20
    ingest_records(usage_payload(ioinfo={"request": "x" * 50, "response": "short"}))

    [log] = search(api, acme_key)["data"]["logs"]

    detail = log["request_detail"]
    assert (detail["request_body"], detail["request_body_truncated"]) == ("x" * 20, True)
    assert (detail["response_body"], detail["response_body_truncated"]) == ("short", False)


def test_price_is_the_sale_price_applied_per_unit_tokens(api, acme_key):
    ModelPrice.objects.create(
        model_name="priced-model",
        kind="sale",
        effective_from=T0 - timedelta(days=1),
        input_price=Decimal("2.50"),
        output_price=Decimal("10"),
        cached_input_price=Decimal("1.25"),
        request_price=Decimal("0.001"),
    )
    payload = usage_payload(model_name="priced-model", use_time=at(0))
    del payload["amount"], payload["cost"]
    ingest_records(payload)

    [log] = search(api, acme_key)["data"]["logs"]

    price = log["price"]
    assert (price["input_price"], price["input_price_unit"]) == (2.5, 1_000_000)
    assert (price["output_price"], price["cached_price"], price["per_request_price"]) == (10, 1.25, 0.001)
    assert price["cache_creation_price"] == 2.5  # no own price: the input price, as pricing charges it
    assert price["thinking_mode_output_price"] == 10
    # 1000 uncached input at 2.5, 200 cached at 1.25, 300 output at 10, per 1M, plus 0.001 per request
    assert log["used_amount"] == pytest.approx(0.0025 + 0.00025 + 0.003 + 0.001)


def test_a_gateway_priced_record_has_no_price_breakdown(api, acme_key):
    ingest_records(usage_payload())

    [log] = search(api, acme_key)["data"]["logs"]

    assert set(log["price"].values()) == {0}


def test_code_type_splits_success_and_error(api, acme_key):
    ingest_records(
        usage_payload(),
        usage_payload(status="failed", code=429, error_message="rate limited", amount="0", cost="0"),
    )

    success = search(api, acme_key, code_type="success")["data"]
    error = search(api, acme_key, code_type="error")["data"]
    both = search(api, acme_key)["data"]

    assert [log["code"] for log in success["logs"]] == [200]
    assert [(log["code"], log["content"]) for log in error["logs"]] == [(429, "rate limited")]
    assert both["total"] == 2


def test_timestamps_are_milliseconds_and_the_end_is_inclusive(api, acme_key):
    ingest_records(
        usage_payload(use_time=at(0)), usage_payload(use_time=at(0.5)), usage_payload(use_time=at(0.501))
    )

    answer = search(api, acme_key, start_timestamp=ms(0), end_timestamp=ms(0.5))["data"]

    assert answer["total"] == 2


def test_pages_with_page_and_per_page(api, acme_key):
    ingest_records(*[usage_payload(use_time=at(n)) for n in range(5)])

    answer = search(api, acme_key, page=2, per_page=2)["data"]

    assert answer["total"] == 5
    assert [datetime.fromisoformat(log["request_at"]) for log in answer["logs"]] == [
        T0 + timedelta(seconds=2),
        T0 + timedelta(seconds=1),
    ]


def test_facets_list_the_ranges_values_whatever_the_other_filters(api, acme_key):
    ingest_records(
        usage_payload(model_name="gpt-4o", token_name="a", channel_id="2"),
        usage_payload(model_name="o3-mini", token_name="b", channel_id="10"),
        usage_payload(model_name="claude", token_name="", channel_id="azure-east"),
        usage_payload(model_name="old-model", use_time=at(-86400)),
        usage_payload(model_name="globex-model", userorgid="globex"),
    )

    answer = search(api, acme_key, model_name="gpt-4o", start_timestamp=ms(-60))["data"]

    assert answer["total"] == 1
    assert answer["models"] == ["claude", "gpt-4o", "o3-mini"]
    assert answer["token_names"] == ["a", "b"]
    assert answer["channels"] == [0, 2, 10]  # integers: a channel id that is not a number is 0


def test_group_search_is_an_orgs_search(api, acme_key, platform_key):
    ingest_records(usage_payload(token_name="a"), usage_payload(userorgid="globex", token_name="g"))

    own = search(api, acme_key, "/api/log/acme/search")["data"]
    other = api.get("/api/log/globex/search", **bearer(acme_key))
    platform = search(api, platform_key, "/api/log/globex/search", token_name="g")["data"]

    assert [log["group"] for log in own["logs"]] == ["acme"]
    assert own["token_names"] == ["a"]
    assert other.status_code == 404
    assert other.json()["success"] is False
    assert [log["group"] for log in platform["logs"]] == ["globex"]


def test_an_org_key_searching_everything_sees_only_its_org(api, acme_key, platform_key):
    ingest_records(usage_payload(), usage_payload(userorgid="globex", model_name="globex-model"))

    mine = search(api, acme_key)["data"]
    # (a time range: unfiltered, a platform key's total is PostgreSQL's estimate of the whole table)
    everyone = search(api, platform_key, code_type="all", start_timestamp=1)["data"]

    assert [log["group"] for log in mine["logs"]] == ["acme"]
    assert mine["models"] == ["gpt-4o"]
    assert everyone["total"] == 2
    assert everyone["models"] == ["globex-model", "gpt-4o"]


def test_self_search_under_api_log_stays_new_apis(api, acme_key):
    ingest_records(usage_payload(transno="needle"))

    response = api.get("/api/log/self/search?keyword=needle", **bearer(acme_key)).json()

    assert isinstance(response["data"], list)  # new-api's list, not AI Proxy's {logs, ...}


@pytest.mark.parametrize(
    ("params", "named"),
    [
        ({"code_type": "failed"}, "code_type"),
        ({"token_name": "a\x00b"}, "token_name"),
        ({"per_page": 101}, "per_page"),
        ({"per_page": 0}, "per_page"),
        ({"page": "first"}, "page"),
        ({"page": 101, "per_page": 100}, "page"),  # past the page-depth cap
        ({"start_timestamp": "2026-11-20"}, "start_timestamp"),
        ({"end_timestamp": "soon"}, "end_timestamp"),
        ({"start_timestamp": ms(10), "end_timestamp": ms(0)}, "end_timestamp"),
    ],
)
def test_bad_input_is_a_400_in_the_envelope_naming_the_parameter(api, acme_key, params, named):
    for path in ("/api/logs/search", "/api/log/acme/search"):
        response = api.get(path, params, **bearer(acme_key))

        assert response.status_code == 400
        answer = response.json()
        assert (answer["success"], answer["data"]) == (False, None)
        assert answer["message"].startswith(f"{named}:"), answer


def test_relay_mode_comes_from_the_endpoint(api, acme_key):
    ingest_records(
        usage_payload(endpoint="/v1/embeddings", use_time=at(3)),
        usage_payload(endpoint="/v1/messages", use_time=at(2)),
        usage_payload(endpoint="/v1/responses", use_time=at(1)),
        usage_payload(endpoint="", use_time=at(0)),
    )

    logs = search(api, acme_key)["data"]["logs"]

    assert [log["mode"] for log in logs] == [3, 12, 16, 0]


def test_a_record_moved_to_history_is_still_found(api, acme_key):
    old, new = ingest_records(
        usage_payload(use_time=at(-86400), model_name="old-model"), usage_payload(use_time=at(0))
    )
    move_to_history(old)

    answer = search(api, acme_key, start_timestamp=ms(-90000))["data"]
    group = search(api, acme_key, "/api/log/acme/search", model_name="old-model")["data"]

    assert [log["id"] for log in answer["logs"]] == [seq_of(new), seq_of(old)]
    assert answer["total"] == 2
    assert "old-model" in answer["models"]
    assert [log["id"] for log in group["logs"]] == [seq_of(old)]


def test_search_takes_a_fixed_number_of_queries(api, acme_key, django_assert_max_num_queries):
    ingest_records(*[usage_payload(model_name=f"model-{n % 5}") for n in range(30)])

    # the API key, where the rollups stand, the count, the page, the facets
    with django_assert_max_num_queries(5):
        answer = search(api, acme_key, per_page=100)

    assert len(answer["data"]["logs"]) == 30
    assert len(answer["data"]["models"]) == 5


@pytest.mark.postgres
def test_an_unfiltered_platform_total_is_the_planners_estimate_and_says_so(api, platform_key, monkeypatch):
    # Estimates start at selectors.COUNT_ESTIMATE_FLOOR rows (fewer are counted): lowered to 1 here.
    monkeypatch.setattr("llmlog.selectors.totals.COUNT_ESTIMATE_FLOOR", 1)
    ingest_records(usage_payload(), usage_payload(userorgid="globex"))
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE llmusage")
        cursor.execute("ANALYZE llmusage_history")

    data = search(api, platform_key)["data"]

    assert (data["total"], data["total_is_estimate"]) == (2, True)
    assert len(data["logs"]) == 2


def test_the_schema_describes_both_ai_proxy_endpoints(api):
    paths = api.get("/api/schema/", {"format": "json"}).json()["paths"]
    seed = {"page", "per_page", "model_name", "token_name", "start_timestamp", "end_timestamp", "code_type"}

    assert {p["name"] for p in paths["/api/logs/search"]["get"]["parameters"]} == seed
    assert {p["name"] for p in paths["/api/log/{group}/search"]["get"]["parameters"]} == seed | {"group"}
    data = paths["/api/logs/search"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert {"logs", "total", "models", "token_names", "channels"} == set(
        data["properties"]["data"]["properties"]
    )


def test_channel_and_token_id_are_integers_on_every_row(api, acme_key):
    ingest_records(
        usage_payload(channel_id="ch-anthropic", token_id="org-20-user-002-tok", token_name="t"),
        usage_payload(channel_id="7", token_id="12"),
        usage_payload(channel_id="", token_id=""),
    )

    answer = search(api, acme_key)["data"]

    assert sorted((log["channel"], log["token_id"]) for log in answer["logs"]) == [(0, 0), (0, 0), (7, 12)]
    assert all(type(log["id"]) is int for log in answer["logs"])
    assert len({log["id"] for log in answer["logs"]}) == 3
    assert answer["channels"] == [0, 7]
    # no kept request: the detail is still an object, with the log's id
    assert all(log["request_detail"]["log_id"] == log["id"] for log in answer["logs"])
