"""OneUptime's LLM Log API (seeds/oneuptime-llm-log-api.txt): get-list, get-item, count."""

import json
import uuid
from datetime import UTC, datetime

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from llmlog.api.dialects.oneuptime.params import log_query
from llmlog.models import AccountingStatus, LLMUsage
from llmlog.rollups import build_usage_rollups
from tests.conftest import bearer
from tests.dialect_schemas import dialect_answers_match_the_seeds  # noqa: F401 - autouse: every answer checked
from tests.factories import ingest_records, move_to_history, usage_payload

pytestmark = pytest.mark.django_db

# The seed's example request, word for word.
SEED_BODY = {
    "select": {
        "costInUSDCents": True,
        "isGlobalProvider": True,
        "projectId": True,
        "status": True,
        "totalTokens": True,
    },
    "query": {"status": "Success"},
    "sort": {"createdAt": -1},
}


def apikey(raw: str) -> dict[str, str]:
    """OneUptime's own header: `ApiKey: <key>`."""
    return {"HTTP_APIKEY": raw}


def get_list(api, key: str, body: dict | None = None, query: str = "skip=0&limit=10"):
    return api.post(f"/api/llm-log/get-list?{query}", body or {}, format="json", **apikey(key))


def test_get_list_answers_the_seed_request_in_the_seed_shape(api, acme_key):
    ingest_records(
        usage_payload(use_time="2026-11-20T10:00:00Z", amount="0.00600", is_global_provider=True),
        usage_payload(use_time="2026-11-20T11:00:00Z", amount="1.25"),
        usage_payload(status="failed", error_message="rate limited", amount="0", cost="0"),
    )

    response = get_list(api, acme_key, SEED_BODY)

    assert response.status_code == 200
    answer = response.json()
    assert list(answer) == ["count", "limit", "skip", "data"]
    assert (answer["count"], answer["limit"], answer["skip"]) == (2, 10, 0)
    newest, oldest = answer["data"]
    assert set(newest) == {"_id", "costInUSDCents", "isGlobalProvider", "projectId", "status", "totalTokens"}
    assert newest["costInUSDCents"] == 125  # amount 1.25 USD in cents
    assert oldest["costInUSDCents"] == pytest.approx(0.6)
    assert oldest["isGlobalProvider"] is True
    assert newest["projectId"] == "acme"
    assert newest["status"] == "Success"
    assert newest["totalTokens"] == 1500
    uuid.UUID(newest["_id"])


def test_get_list_pages_with_skip_and_limit_default_ten(api, acme_key):
    ingest_records(*[usage_payload(use_time=f"2026-11-20T10:{minute:02d}:00Z") for minute in range(12)])

    first = api.post("/api/llm-log/get-list", {}, format="json", **apikey(acme_key)).json()
    second = get_list(api, acme_key, {"select": {"createdAt": True}}, query="skip=10&limit=10").json()

    assert (first["count"], first["limit"], first["skip"], len(first["data"])) == (12, 10, 0, 10)
    assert list(first["data"][0]) == ["_id"]  # like OneUptime: only the id unless selected
    assert [row["createdAt"] for row in second["data"]] == [
        "2026-11-20T10:01:00+00:00",
        "2026-11-20T10:00:00+00:00",
    ]
    assert not {row["_id"] for row in first["data"]} & {row["_id"] for row in second["data"]}


def test_get_list_works_with_get_and_json_query_parameters(api, acme_reader_key):
    ingest_records(usage_payload(model_name="gpt-4o"), usage_payload(model_name="claude-sonnet-4"))

    response = api.get(
        "/api/llm-log/get-list",
        {
            "limit": "5",
            "select": json.dumps({"modelName": True}),
            "query": json.dumps({"modelName": "gpt-4o"}),
        },
        **apikey(acme_reader_key),
    )

    assert response.status_code == 200
    assert [row["modelName"] for row in response.json()["data"]] == ["gpt-4o"]


def test_every_field_of_the_seed_model_maps_to_the_record(api, acme_key):
    [record_id] = ingest_records(
        usage_payload(
            use_time="2026-11-20T10:00:00Z",
            finish_seconds=2.5,
            channel_id="ch-7",
            provider="OpenAI prod",
            provider_type="openai",
            feature="IncidentPostmortem",
            userid="user-9",
            ioinfo={"request": "Summarize the incident", "response": "The database ran out of disk."},
            metadata={"incidentId": "inc-1", "alertId": "al-2"},
        )
    )
    LLMUsage.objects.filter(pk=record_id).update(
        accounting_status=AccountingStatus.ACCOUNTED, accounted_at=datetime(2026, 11, 20, 10, 5, tzinfo=UTC)
    )
    select = {name: True for name in (
        "createdAt", "updatedAt", "projectId", "project", "llmProvider", "llmProviderId", "llmProviderName",
        "llmType", "modelName", "isGlobalProvider", "inputTokens", "outputTokens", "totalTokens",
        "costInUSDCents", "wasBilled", "status", "statusMessage", "feature", "requestPrompt",
        "responsePreview", "incident", "incidentId", "alert", "alertId", "scheduledMaintenance",
        "scheduledMaintenanceId", "user", "userId", "requestStartedAt", "requestCompletedAt", "durationMs",
    )}  # fmt: skip

    item = api.post(
        f"/api/llm-log/{record_id}/get-item", {"select": select}, format="json", **apikey(acme_key)
    ).json()

    assert item == {
        "_id": record_id,
        "createdAt": "2026-11-20T10:00:00+00:00",
        "updatedAt": "2026-11-20T10:05:00+00:00",
        "projectId": "acme",
        "project": {"_id": "acme"},
        "llmProvider": {"_id": "ch-7"},
        "llmProviderId": "ch-7",
        "llmProviderName": "OpenAI prod",
        "llmType": "openai",
        "modelName": "gpt-4o",
        "isGlobalProvider": False,
        "inputTokens": 1200,
        "outputTokens": 300,
        "totalTokens": 1500,
        "costInUSDCents": pytest.approx(0.6),
        "wasBilled": True,
        "status": "Success",
        "statusMessage": "",
        "feature": "IncidentPostmortem",
        "requestPrompt": "Summarize the incident",
        "responsePreview": "The database ran out of disk.",
        "incident": {"_id": "inc-1"},
        "incidentId": "inc-1",
        "alert": {"_id": "al-2"},
        "alertId": "al-2",
        "scheduledMaintenance": None,
        "scheduledMaintenanceId": None,
        "user": {"_id": "user-9"},
        "userId": "user-9",
        "requestStartedAt": "2026-11-20T10:00:00+00:00",
        "requestCompletedAt": "2026-11-20T10:00:02.500000+00:00",
        "durationMs": 2500,
    }


def test_get_item_answers_only_the_id_without_select_and_works_with_get(api, acme_key):
    [record_id] = ingest_records(usage_payload())

    posted = api.post(f"/api/llm-log/{record_id}/get-item", {}, format="json", **apikey(acme_key))
    got = api.get(
        f"/api/llm-log/{record_id}/get-item",
        {"select": json.dumps({"totalTokens": True})},
        **apikey(acme_key),
    )

    assert posted.json() == {"_id": record_id}
    assert got.json() == {"_id": record_id, "totalTokens": 1500}


def test_get_item_of_a_bad_id_is_400_and_of_another_org_is_404(api, acme_key, globex_key):
    [record_id] = ingest_records(usage_payload(userorgid="globex"))

    bad = api.post("/api/llm-log/not-a-uuid/get-item", {}, format="json", **apikey(acme_key))
    foreign = api.post(f"/api/llm-log/{record_id}/get-item", {}, format="json", **apikey(acme_key))
    own = api.post(f"/api/llm-log/{record_id}/get-item", {}, format="json", **apikey(globex_key))

    assert bad.status_code == 400
    assert bad.json()["message"].startswith("id:")
    assert foreign.status_code == 404
    assert "message" in foreign.json()
    assert own.status_code == 200


def test_count_answers_count_under_the_query(api, acme_key):
    ingest_records(
        usage_payload(model_name="gpt-4o"),
        usage_payload(model_name="gpt-4o", status="failed", amount="0", cost="0"),
        usage_payload(model_name="o3-mini"),
    )

    def count(query: dict) -> int:
        response = api.post("/api/llm-log/count", {"query": query}, format="json", **apikey(acme_key))
        assert response.status_code == 200, response.json()
        assert list(response.json()) == ["count"]
        return response.json()["count"]

    assert count({}) == 3
    assert count({"modelName": "gpt-4o"}) == 2
    assert count({"modelName": "gpt-4o", "status": "Error"}) == 1
    assert count({"status": "Insufficient Balance"}) == 0
    # status is Text in the seed: any string is a valid value; one no record has finds nothing
    assert count({"status": "Example status"}) == 0
    assert count({"status": "success"}) == 0  # a value is compared as answered ("Success"), not stored
    assert count({"status": {"_type": "NotEqual", "value": "Example status"}}) == 3
    assert count({"status": {"_type": "Includes", "value": ["Error", "Example status"]}}) == 1
    assert count({"modelName": "no such model", "llmType": "Example", "feature": "Example feature"}) == 0
    assert api.get("/api/llm-log/count", **apikey(acme_key)).status_code == 405  # POST only, as the seed


def test_query_operators(api, acme_key):
    ingest_records(
        usage_payload(use_time="2026-11-01T00:00:00Z", input_tokens=100, output_tokens=0, cached_tokens=0),
        usage_payload(use_time="2026-11-10T00:00:00Z", model_name="o3-mini", finish_seconds=0.4),
        usage_payload(
            use_time="2026-11-20T00:00:00Z",
            status="failed",
            error_message="Rate limit reached",
            amount="0",
            cost="0",
            metadata={"incidentId": "inc-1"},
        ),
    )

    def count(query: dict) -> int:
        response = api.post("/api/llm-log/count", {"query": query}, format="json", **apikey(acme_key))
        assert response.status_code == 200, response.json()
        return response.json()["count"]

    between = {"_type": "InBetween", "startValue": "2026-11-05T00:00:00Z", "endValue": "2026-11-30T00:00:00Z"}
    assert count({"createdAt": between}) == 2
    assert (
        count({"createdAt": {"_type": "GreaterThan", "value": {"_type": "DateTime", "value": "2026-11-15"}}})
        == 1
    )
    assert count({"totalTokens": {"_type": "LessThan", "value": 1000}}) == 1
    assert count({"modelName": {"_type": "Includes", "value": ["o3-mini", "claude"]}}) == 1
    assert count({"modelName": {"_type": "NotEqual", "value": "o3-mini"}}) == 2
    assert count({"statusMessage": {"_type": "Search", "value": "rate limit"}}) == 1
    assert count({"statusMessage": {"_type": "IsNull"}}) == 2
    assert count({"durationMs": {"_type": "GreaterThanOrEqual", "value": 400}}) == 1
    assert count({"durationMs": None}) == 2
    assert count({"costInUSDCents": {"_type": "GreaterThan", "value": 0.5}}) == 2
    assert count({"incidentId": "inc-1"}) == 1
    assert count({"wasBilled": False}) == 3
    assert count({"wasBilled": True}) == 0


@pytest.mark.parametrize(
    ("body", "query", "named"),
    [
        ({"select": {"bogus": True}}, "", "select.bogus"),
        ({"query": {"bogus": 1}}, "", "query.bogus"),
        ({"sort": {"bogus": -1}}, "", "sort.bogus"),
        ({"sort": {"modelName": -1}}, "", "sort.modelName"),  # a known field that is not sortable
        ({"sort": {"createdAt": "sideways"}}, "", "sort.createdAt"),
        ({"query": {"requestPrompt": "x"}}, "", "query.requestPrompt"),  # select-only
        ({"query": {"status": {"_type": "GreaterThan", "value": "a"}}}, "", "query.status"),  # Text: no order
        ({"query": {"status": ["Success"]}}, "", "query.status"),
        ({"query": {"_id": "nope"}}, "", "query._id"),
        ({"query": {"totalTokens": "many"}}, "", "query.totalTokens"),
        ({"query": {"totalTokens": 10**30}}, "", "query.totalTokens"),
        (
            {"query": {"costInUSDCents": {"_type": "GreaterThan", "value": 10**25}}},
            "",
            "query.costInUSDCents",
        ),
        ({"query": {"totalTokens": {"_type": "Between"}}}, "", "query.totalTokens"),
        ({"query": {"createdAt": "yesterday-ish"}}, "", "query.createdAt"),
        ({"query": {"modelName": ["a", "b"]}}, "", "query.modelName"),
        ({"query": {"modelName": "gpt\x00"}}, "", "query.modelName"),
        ({"query": "status=Success"}, "", "query"),
        ({}, "limit=101", "limit"),
        ({}, "limit=ten", "limit"),
        ({}, "skip=-1", "skip"),
        ({}, "skip=9995&limit=10", "skip"),  # past the page-depth cap
    ],
)
def test_bad_input_is_a_400_naming_the_field(api, acme_key, body, query, named):
    response = get_list(api, acme_key, body, query=query)

    assert response.status_code == 400
    message = response.json()["message"]
    # A NUL is refused by the JSON parser already, which names the field by its JSON path.
    assert message.startswith(f"{named}:") or f"$.{named} holds a NUL" in message, message


def test_page_depth_error_says_how_to_reach_older_records(api, acme_key):
    response = get_list(api, acme_key, {}, query="skip=10000&limit=1")

    assert response.status_code == 400
    assert "10000" in response.json()["message"]
    assert "createdAt" in response.json()["message"]


def test_keys_need_the_read_scope_and_the_answer_keeps_oneuptimes_error_shape(api, make_key):
    ingest_only = make_key(org="acme", scopes=("ingest",))

    anonymous = api.post("/api/llm-log/get-list", {}, format="json")
    forbidden = api.post("/api/llm-log/get-list", {}, format="json", **apikey(ingest_only))

    assert anonymous.status_code == 401
    assert "message" in anonymous.json()
    assert forbidden.status_code == 403
    assert "read" in forbidden.json()["message"]


def test_an_org_never_lists_or_counts_another_orgs_records(api, acme_key, globex_key, platform_key):
    ingest_records(usage_payload(), usage_payload(userorgid="globex"), usage_payload(userorgid="globex"))

    acme = get_list(api, acme_key, {"select": {"projectId": True}}).json()
    snooping = get_list(api, acme_key, {"query": {"projectId": "globex"}}).json()
    acme_count = api.post("/api/llm-log/count", {"query": {}}, format="json", **apikey(acme_key)).json()
    globex_count = api.post("/api/llm-log/count", {}, format="json", **bearer(globex_key)).json()
    platform = get_list(api, platform_key, {"query": {"projectId": {"_type": "NotNull"}}}).json()

    assert {row["projectId"] for row in acme["data"]} == {"acme"}
    assert acme["count"] == 1
    assert snooping["count"] == 0 and snooping["data"] == []
    assert acme_count == {"count": 1}
    assert globex_count == {"count": 2}
    assert platform["count"] == 3


def test_a_record_moved_to_history_is_still_listed_counted_and_found(api, acme_key):
    old, new = ingest_records(usage_payload(use_time="2026-11-01T10:00:00Z"), usage_payload())
    move_to_history(old)

    listed = get_list(api, acme_key, {"sort": {"createdAt": 1}}).json()
    count = api.post("/api/llm-log/count", {"query": {}}, format="json", **apikey(acme_key)).json()
    item = api.post(
        f"/api/llm-log/{old}/get-item", {"select": {"createdAt": True}}, format="json", **apikey(acme_key)
    )

    assert [row["_id"] for row in listed["data"]] == [old, new]
    assert count == {"count": 2}
    assert item.status_code == 200
    assert item.json()["createdAt"] == "2026-11-01T10:00:00+00:00"


def test_get_list_takes_a_fixed_number_of_queries(api, acme_key, django_assert_max_num_queries):
    ingest_records(*[usage_payload() for _ in range(30)])

    # the API key, the page, where the rollups stand, the count
    with django_assert_max_num_queries(4):
        response = get_list(api, acme_key, SEED_BODY, query="limit=100")

    assert len(response.json()["data"]) == 30


@pytest.mark.postgres
def test_an_unfiltered_platform_count_is_the_planners_estimate_and_says_so(api, platform_key, monkeypatch):
    # Estimates start at selectors.COUNT_ESTIMATE_FLOOR rows (fewer are counted): lowered to 1 here.
    monkeypatch.setattr("llmlog.selectors.totals.COUNT_ESTIMATE_FLOOR", 1)
    ingest_records(usage_payload(), usage_payload(userorgid="globex"))
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE llmusage")
        cursor.execute("ANALYZE llmusage_history")

    answer = api.post("/api/llm-log/count", {}, format="json", **apikey(platform_key)).json()

    assert answer == {"count": 2, "countIsEstimate": True}


def test_the_schema_describes_every_oneuptime_endpoint(api):
    paths = api.get("/api/schema/", {"format": "json"}).json()["paths"]

    listed = paths["/api/llm-log/get-list"]
    assert {"get", "post"} <= set(listed)
    assert {p["name"] for p in listed["post"]["parameters"]} == {"skip", "limit"}
    assert {p["name"] for p in listed["get"]["parameters"]} == {"skip", "limit", "select", "query", "sort"}
    assert {"select", "query", "sort"} <= set(
        listed["post"]["requestBody"]["content"]["application/json"]["schema"]["properties"]
    )
    assert {"get", "post"} <= set(paths["/api/llm-log/{id}/get-item"])
    assert set(paths["/api/llm-log/count"]) == {"post"}


def test_the_seeds_example_bodies_answer_200_in_the_seed_envelope(api, acme_key):
    """Sent verbatim, as printed in seeds/oneuptime-llm-log-api.txt."""
    ingest_records(usage_payload())
    select = {
        "costInUSDCents": True,
        "isGlobalProvider": True,
        "projectId": True,
        "status": True,
        "totalTokens": True,
    }
    example = {"select": select, "query": {"status": "Example status"}, "sort": {"createdAt": -1}}

    listed = api.post("/api/llm-log/get-list?skip=0&limit=10", example, format="json", **apikey(acme_key))
    counted = api.post(
        "/api/llm-log/count", {"query": {"status": "Example status"}}, format="json", **apikey(acme_key)
    )

    assert listed.status_code == 200
    assert listed.json() == {"count": 0, "limit": 10, "skip": 0, "data": []}
    assert counted.status_code == 200
    assert counted.json() == {"count": 0}


def test_an_unpriced_records_cost_is_a_number_as_the_seed_requires(api, acme_key):
    [record_id] = ingest_records(usage_payload(model_name="no-price-model", amount=None, cost=None))

    answer = api.post(
        f"/api/llm-log/{record_id}/get-item",
        {"select": {"costInUSDCents": True}},
        format="json",
        **apikey(acme_key),
    ).json()

    assert answer == {"_id": record_id, "costInUSDCents": 0}


def test_sorting_puts_nulls_last_only_where_a_column_can_be_null(api, acme_key):
    """`use_time DESC NULLS LAST` cannot read the (userorgid, -use_time) index, whose order is NULLS
    FIRST: PostgreSQL sorted every record of the org for each page. A NOT NULL column gets no NULLS
    clause; a nullable one (amount) keeps its unpriced records last either way."""
    ingest_records(
        usage_payload(model_name="no-price-model", amount=None, cost=None, use_time="2026-11-20T12:00:00Z"),
        usage_payload(amount="2.5", use_time="2026-11-20T10:00:00Z"),
        usage_payload(amount="1.5", use_time="2026-11-20T11:00:00Z"),
    )
    select = {"costInUSDCents": True, "createdAt": True}

    with CaptureQueriesContext(connection) as queries:
        newest_first = get_list(api, acme_key, {"select": select, "sort": {"createdAt": -1}}).json()["data"]
    [page_sql] = [
        sql for sql in (query["sql"] for query in queries) if 'FROM "llmusage_all"' in sql and "LIMIT" in sql
    ]
    assert "DESC" in page_sql and "NULLS" not in page_sql
    assert [row["createdAt"][11:13] for row in newest_first] == ["12", "11", "10"]

    # By amount: 2.5 (10h), 1.5 (11h), then the unpriced record (12h) last; ascending, it comes first.
    for direction, hours in ((-1, ["10", "11", "12"]), (1, ["12", "11", "10"])):
        data = get_list(api, acme_key, {"select": select, "sort": {"costInUSDCents": direction}}).json()[
            "data"
        ]
        assert [row["createdAt"][11:13] for row in data] == hours


def test_in_between_on_created_at_is_the_time_range_inclusive_and_the_rollups_count_it(api, acme_key):
    """InBetween is startValue <= createdAt <= endValue. It is the query's time range [start, end + 1 µs),
    not a condition of its own, so a count under it is read from the hourly rollups (whole closed hours)
    and the rows of its edges: exact at both ends, and no scan of the org's records."""
    times = ["2026-11-18T09:59:59Z", "2026-11-18T10:00:00Z", "2026-11-18T12:30:00Z", "2026-11-19T07:15:00.5Z"]
    ingest_records(*[usage_payload(use_time=when) for when in [*times, "2026-11-19T07:15:00.500001Z"]])
    build_usage_rollups(now=datetime(2026, 11, 20, tzinfo=UTC))
    between = {"_type": "InBetween", "startValue": times[1], "endValue": times[3]}

    query = log_query({"query": {"createdAt": between}}, org="acme")
    assert query.where is None and query.rollups_can_answer
    response = api.post(
        "/api/llm-log/count", {"query": {"createdAt": between}}, format="json", **apikey(acme_key)
    )
    assert response.json() == {"count": 3}  # 10:00:00 and 07:15:00.5 themselves, not 09:59:59 nor a µs after
    listed = get_list(api, acme_key, {"select": {"createdAt": True}, "query": {"createdAt": between}}).json()
    assert listed["count"] == 3 and len(listed["data"]) == 3
