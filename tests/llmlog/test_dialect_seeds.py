"""The seeds' own example requests, sent verbatim, answer 200 in the seed's envelope; every dialect
operation is covered by a seed schema and a strict-typed client (tests/dialect_schemas), which the
dialect tests apply to every answer; and the schemas do catch an answer typed otherwise."""

import json

import msgspec
import pytest

from tests.conftest import bearer
from tests.dialect_schemas import (
    OPERATIONS,
    check_answer,
    checked,
    dialect_answers_match_the_seeds,  # noqa: F401 - autouse: every answer checked
)
from tests.factories import ingest_records, usage_payload

pytestmark = pytest.mark.django_db

# new-api: the fetch() URLs printed in seeds/new-api-log-module.txt, verbatim.
NEWAPI_EXAMPLES = [
    ("GET", "/api/log/self/stat?type=2&start_timestamp=1640908800&end_timestamp=1640995200&token_name=api_token&model_name=gpt-4&group=default", "self"),  # noqa: E501 - verbatim
    ("GET", "/api/log/self?p=1&page_size=20&type=2&start_timestamp=1640908800&end_timestamp=1640995200&token_name=api_token&model_name=gpt-4&group=default", "self"),  # noqa: E501 - verbatim
    ("GET", "/api/log/self/search?keyword=gpt-4", "self"),
    ("GET", "/api/log/?p=1&page_size=20&type=2&start_timestamp=1640908800&end_timestamp=1640995200&username=testuser&token_name=api_token&model_name=gpt-4&channel=1&group=default", "admin"),  # noqa: E501 - verbatim
    ("DELETE", "/api/log/?target_timestamp=1640908800", "admin"),
    ("GET", "/api/log/stat?type=2&start_timestamp=1640908800&end_timestamp=1640995200&username=testuser&token_name=api_token&model_name=gpt-4&channel=1&group=default", "admin"),  # noqa: E501 - verbatim
    ("GET", "/api/log/search?keyword=error", "admin"),
    ("GET", "/api/log/token?key=<TOKEN_PLACEHOLDER>", "none"),
]  # fmt: skip
# AI Proxy's seed lists the parameters, not a URL: every parameter it names, with a value of its type.
AIPROXY_EXAMPLES = [
    "/api/logs/search?page=1&per_page=10&model_name=gpt-4&start_timestamp=1640908800000"
    "&end_timestamp=1640995200000&code_type=all",
    "/api/log/acme/search?page=1&per_page=10&model_name=gpt-4&token_name=api_token"
    "&start_timestamp=1640908800000&end_timestamp=1640995200000&code_type=success",
]
ONEUPTIME_SELECT = {
    "costInUSDCents": True,
    "isGlobalProvider": True,
    "projectId": True,
    "status": True,
    "totalTokens": True,
}


@pytest.fixture
def records():
    """Records that the seed examples' filters find: new-api's gpt-4 call of 2021-12-31 (the examples'
    time range), a failed one, and today's."""
    return ingest_records(
        usage_payload(
            use_time="2021-12-31T12:00:00Z",
            model_name="gpt-4",
            token_name="api_token",
            username="testuser",
            channel_id="1",
            group="default",
            amount="0.00200",
        ),
        usage_payload(status="failed", error_message="error: upstream 502", amount="0", cost="0"),
        usage_payload(channel_id="ch-anthropic", token_id="org-20-user-002-tok"),
    )


@pytest.mark.parametrize(
    ("method", "url", "who"),
    NEWAPI_EXAMPLES,
    ids=[url.split("?")[0] + f" {m}" for m, url, _ in NEWAPI_EXAMPLES],
)
def test_every_new_api_seed_example_answers_200_in_its_envelope(
    api, acme_key, platform_key, records, method, url, who
):
    key = {"self": acme_key, "admin": platform_key, "none": None}[who]
    response = api.generic(method, url, **(bearer(key) if key else {}))

    assert response.status_code == 200, response.content
    body = response.json()
    assert (body["success"], body["message"]) == (True, "")
    assert "data" in body


def test_the_new_api_seed_examples_find_the_seeds_records(api, acme_key, platform_key, records):
    [stat_url, self_url, search_url] = [url for _, url, who in NEWAPI_EXAMPLES if who == "self"]

    page = api.get(self_url, **bearer(acme_key)).json()["data"]
    stat = api.get(stat_url, **bearer(acme_key)).json()["data"]
    found = api.get(search_url, **bearer(acme_key)).json()["data"]

    assert [item["model_name"] for item in page["items"]] == ["gpt-4"]
    assert stat["quota"] == page["items"][0]["quota"] == 1000  # 0.002 x 500,000: the seed's own example
    # a prefix of "gpt-4: ..." and of "gpt-4o: ..." (the failed call's content is its error)
    assert [item["model_name"] for item in found] == ["gpt-4o", "gpt-4"]


@pytest.mark.parametrize("url", AIPROXY_EXAMPLES)
def test_every_ai_proxy_seed_request_answers_200_in_its_envelope(api, acme_key, records, url):
    response = api.get(url, **bearer(acme_key))

    assert response.status_code == 200, response.content
    assert set(response.json()) == {"data", "message", "success"}
    assert [log["model"] for log in response.json()["data"]["logs"]] == ["gpt-4"]


def test_every_oneuptime_seed_example_answers_200_in_its_envelope(api, acme_key, records):
    headers = {"HTTP_APIKEY": acme_key}
    listed = api.post(
        "/api/llm-log/get-list?skip=0&limit=10",
        {"select": ONEUPTIME_SELECT, "query": {"status": "Example status"}, "sort": {"createdAt": -1}},
        format="json",
        **headers,
    )
    item = api.post(
        f"/api/llm-log/{records[0]}/get-item", {"select": ONEUPTIME_SELECT}, format="json", **headers
    )
    counted = api.post(
        "/api/llm-log/count", {"query": {"status": "Example status"}}, format="json", **headers
    )

    assert (listed.status_code, item.status_code, counted.status_code) == (200, 200, 200)
    assert listed.json() == {"count": 0, "limit": 10, "skip": 0, "data": []}
    assert set(item.json()) == {"_id", *ONEUPTIME_SELECT}
    assert counted.json() == {"count": 0}


def test_every_dialect_operation_has_a_seed_schema_and_a_typed_client():
    routes = {(method, pattern.pattern) for method, pattern, *_ in OPERATIONS}
    assert len(routes) == 11  # new-api 6 paths (GET and DELETE on /api/log/), AI Proxy 2, OneUptime 3
    for _, _, ok_schema, ok_type, error_schema, error_type in OPERATIONS:
        assert ok_schema["type"] == error_schema["type"] == "object" or ok_schema.get("required")
        assert issubclass(ok_type, msgspec.Struct) and issubclass(error_type, msgspec.Struct)


@pytest.mark.parametrize(
    ("path", "body"),
    [
        # new-api before issue 15: a UUID id, a decimal quota, a text channel id
        ("/api/log/self/search", {"success": True, "message": "", "data": [{"id": "01a2-uuid", "quota": 0.006}]}),  # noqa: E501 - verbatim
        ("/api/log/self/stat", {"success": True, "message": "", "data": {"quota": 0.006, "rpm": 0, "tpm": 0}}),  # noqa: E501 - verbatim
        # AI Proxy before issue 15: channels as text
        (
            "/api/logs/search",
            {"data": {"logs": [], "total": 0, "models": [], "token_names": [], "channels": ["ch-a"]},
             "message": "", "success": True},
        ),
        # OneUptime: a required Number as null
        ("/api/llm-log/count", {"count": None}),
    ],
)  # fmt: skip
def test_the_schemas_refuse_an_answer_typed_otherwise(path, body):
    method = "POST" if "llm-log" in path else "GET"
    with pytest.raises((AssertionError, msgspec.ValidationError)):
        check_answer(method, path, 200, json.dumps(body).encode())


def test_the_typed_clients_refuse_what_the_schemas_would_let_through():
    """strict=True: a number sent as text is an error, not a conversion."""
    body = {"success": True, "message": "", "data": {"quota": "5", "rpm": 0, "tpm": 0}}
    with pytest.raises((AssertionError, msgspec.ValidationError)):
        check_answer("GET", "/api/log/stat", 200, json.dumps(body).encode())


def test_answers_of_this_run_were_checked(api, acme_key):
    before = len(checked)
    api.get("/api/log/self", **bearer(acme_key))
    api.get("/api/log/self?p=0", **bearer(acme_key))  # an error answer is checked too
    assert [status for _, _, status in checked[before:]] == [200, 400]
