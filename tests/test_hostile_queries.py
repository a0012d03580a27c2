"""Hostile input beyond ingest: every read endpoint and dialect, and the admin.

- SQL, HTML, LIKE wildcards and oversized text in every search keyword and text filter: a 4xx naming
  the parameter or a correct answer (nothing matches them), never a 500; the tables are intact after.
- Times far in the past and the future in every time filter, in more than one TIME_ZONE.
- Ids that are not UUIDs (or integers, for failures) in every path that takes one: a 400 naming it or a
  404, never a 500. Paths are read from the OpenAPI schema, so a new one is covered by being there.
- The admin escapes everything stored: a record whose every text holds <script> shows as text in the
  usage and history lists and change pages, the failures list and the dashboard.

Hostile ingest bodies are tests/llmlog/test_hostile_ingest.py's.
"""

import json
import re
from collections.abc import Callable
from typing import Any
from urllib.parse import quote, urlencode

import pytest
from django.test import override_settings
from django.urls import reverse
from drf_spectacular.generators import SchemaGenerator

from llmlog.api.access import MAX_ORG_LENGTH
from llmlog.models import LLMUsage, LLMUsageHistory
from tests.conftest import bearer
from tests.factories import make_usage
from tests.hardening import ACME_MARK, seed_orgs

pytestmark = pytest.mark.django_db

HOSTILE = [
    "' OR '1'='1",
    "'; DROP TABLE llmusage; --",
    '" OR ""="',
    "<script>alert(1)</script>",
    "<img src=x onerror=alert(1)>",
    "%",
    "_",
    "\\",
    "acme' --",
    "${jndi:ldap://x}",
    "😀\u202e\ufeff",
    "x" * 5000,
]


@pytest.fixture
def seeded(db, settings) -> dict:
    settings.LLMLOG_INGEST_RATE = None
    return seed_orgs()


def get(api, key: str, path: str, params: dict[str, Any] | None = None):
    query = f"?{urlencode(params)}" if params else ""
    return api.get(f"{path}{query}", **bearer(key))


def post_json(api, key: str, path: str, body: Any):
    return api.post(path, data=json.dumps(body), content_type="application/json", **bearer(key))


def assert_clean_refusal(response, params: list[str]) -> None:
    """A 4xx whose message names one of `params` (in whatever envelope the endpoint answers)."""
    assert 400 <= response.status_code < 500, response.content[:300]
    text = response.content.decode()
    assert any(name in text for name in params), text[:500]


# --- what each read answers when nothing matches ------------------------------------------------


def native_empty(body: dict) -> bool:
    if "results" in body:
        return body["results"] == []
    if "requests" in body:
        return body["requests"] == 0 and body["amount"] == "0.00000" and body["by_model"] == []
    if "rpm" in body:
        return body == {"rpm": 0, "tpm": 0}
    if "rows" in body:  # the cost drift report
        return body["rows"] == [] and body["truncated"] is False
    return body["count"] == 0


def newapi_empty(body: dict) -> bool:
    data = body["data"]
    if isinstance(data, list):
        return data == []
    if "items" in data:
        return data["items"] == [] and data["total"] == 0
    return data == {"quota": 0, "rpm": 0, "tpm": 0}


def aiproxy_empty(body: dict) -> bool:
    return body["data"]["logs"] == [] and body["data"]["total"] == 0


# (path, text parameters, how "nothing found" looks); `keyword` and `key` are the search texts.
TEXT_READS: list[tuple[str, tuple[str, ...], Callable[[dict], bool]]] = [
    (
        "/api/llmusage/",
        ("userid", "userorgid", "ownerid", "llmid", "model_name", "token_name", "group", "feature"),
        native_empty,
    ),
    ("/api/llmusage/search/", ("keyword",), native_empty),
    ("/api/llmusage/search/", ("keyword", "userid", "model_name"), native_empty),
    ("/api/llmusage/count/", ("userid", "userorgid", "model_name", "token_name", "group"), native_empty),
    ("/api/llmusage/stats/", ("userid", "userorgid", "model_name", "token_name", "feature"), native_empty),
    ("/api/llmusage/rates/", ("userid", "model_name", "group"), native_empty),
    ("/api/llmusage-history/", ("userid", "userorgid", "model_name", "token_name"), native_empty),
    ("/api/llmusage-history/count/", ("userid", "model_name"), native_empty),
    ("/api/log/", ("username", "token_name", "model_name", "channel", "group"), newapi_empty),
    ("/api/log/self", ("username", "token_name", "model_name", "channel", "group"), newapi_empty),
    ("/api/log/stat", ("username", "token_name", "model_name", "channel", "group"), newapi_empty),
    ("/api/log/self/stat", ("username", "model_name"), newapi_empty),
    ("/api/log/search", ("keyword",), newapi_empty),
    ("/api/log/self/search", ("keyword",), newapi_empty),
    ("/api/log/token", ("key",), newapi_empty),
    ("/api/logs/search", ("model_name", "token_name"), aiproxy_empty),
    ("/api/budgets/", ("org", "userid", "token_name"), native_empty),
    (
        "/api/llmusage/cost-drift/",
        ("provider", "userid", "userorgid", "model_name", "token_name", "group", "feature", "llmid"),
        native_empty,
    ),
]


# Reads whose text parameters the tests below cover another way (a path parameter, a JSON query).
COVERED_ELSEWHERE = {
    "/api/log/{group}/search",
    "/api/llm-log/get-list",
    "/api/llm-log/{id}/get-item",
    "/api/accounting-failures/",
    "/api/accounts/",
    "/api/accounts/{org}/lines/",
    "/api/exports/focus/",  # a CSV: test_sql_and_html_in_the_focus_export_find_nothing
}


def test_every_read_with_a_text_parameter_is_covered():
    """A new read endpoint with a free-text query parameter must join TEXT_READS (or say where else
    its hostile input is tried)."""
    schema = SchemaGenerator().get_schema(request=None, public=True)
    reads = {
        path
        for path, operations in schema["paths"].items()
        for parameter in operations.get("get", {}).get("parameters", [])
        if parameter["in"] == "query"
        and parameter.get("schema", {}).get("type") == "string"
        and "enum" not in parameter.get("schema", {})
        and parameter["name"] not in ("cursor", "ordering", "start_time", "end_time")
    }
    assert {"/api/llmusage/", "/api/log/self", "/api/logs/search"} <= reads
    assert reads - {path for path, _, _ in TEXT_READS} - COVERED_ELSEWHERE == set()


@pytest.mark.parametrize("value", HOSTILE, ids=lambda v: v[:12])
@pytest.mark.parametrize(
    ("path", "params", "empty"), TEXT_READS, ids=lambda p: p if isinstance(p, str) else ""
)
def test_sql_and_html_in_text_filters_find_nothing_and_break_nothing(
    api, platform_key, seeded, path, params, empty, value
):
    response = get(api, platform_key, path, dict.fromkeys(params, value))

    if response.status_code != 200:
        assert_clean_refusal(response, list(params))
    else:
        assert empty(response.json()), response.content[:500]
    assert LLMUsage.objects.count() == 8 and LLMUsageHistory.objects.count() == 2  # nothing dropped


@pytest.mark.parametrize("value", HOSTILE, ids=lambda v: v[:12])
def test_sql_and_html_in_a_group_path_and_oneuptime_queries_find_nothing(api, platform_key, seeded, value):
    group = get(api, platform_key, f"/api/log/{quote(value, safe='')}/search")
    query = {"modelName": value, "userId": {"_type": "Search", "value": value}, "projectId": value}
    listed = post_json(api, platform_key, "/api/llm-log/get-list", {"query": query})
    listed_by_get = get(api, platform_key, "/api/llm-log/get-list", {"query": json.dumps(query)})
    counted = post_json(api, platform_key, "/api/llm-log/count", {"query": query})

    if "/" in value:  # a group name with a slash is another path, which does not exist: a JSON 404
        assert group.status_code == 404 and group.json()["detail"], group.content[:300]
    else:
        assert group.status_code == 200 and aiproxy_empty(group.json()), group.content[:300]
    assert listed.status_code == 200 and listed.json()["data"] == [] and listed.json()["count"] == 0
    assert listed_by_get.json()["data"] == []
    assert counted.json() == {"count": 0}
    assert LLMUsage.objects.count() == 8


@pytest.mark.parametrize("value", HOSTILE, ids=lambda v: v[:12])
def test_sql_and_html_in_the_focus_export_find_nothing(api, platform_key, seeded, value):
    month = seeded["acme"].hot[0].use_time.strftime("%Y-%m")
    exported = get(api, platform_key, "/api/exports/focus/", {"month": month, "userorgid": value})
    refused = get(api, platform_key, "/api/exports/focus/", {"month": value})

    if exported.status_code == 200:
        lines = b"".join(exported.streaming_content).decode().splitlines()
        assert len(lines) == 1 and lines[0].startswith("BilledCost,"), lines[:3]  # the header alone
    else:
        assert_clean_refusal(exported, ["userorgid"])
    assert_clean_refusal(refused, ["month"])
    assert LLMUsage.objects.count() == 8


@pytest.mark.parametrize("value", HOSTILE, ids=lambda v: v[:12])
def test_sql_and_html_in_accounting_filters_find_nothing(api, platform_key, seeded, value):
    failures = get(api, platform_key, "/api/accounting-failures/", {"transno": value, "userid": value})
    accounts = get(api, platform_key, "/api/accounts/", {"org": value})
    lines = get(api, platform_key, f"/api/accounts/{quote(value, safe='')}/lines/")

    for response in (failures, accounts):
        if response.status_code == 400:  # longer than the column: named
            assert_clean_refusal(response, ["transno", "userid", "org"])
        else:
            assert response.status_code == 200 and response.json()["results"] == []
    if len(value) > MAX_ORG_LENGTH:  # no org can be that long: a 400 naming the path's {org}
        assert lines.status_code == 400
        assert set(lines.json()) == {"org"} and f"At most {MAX_ORG_LENGTH} characters." in str(lines.json())
    else:
        assert lines.status_code == 404


@pytest.mark.parametrize("value", ["%", "_", "\\", "' OR '1'='1", "<script>"])
def test_search_is_literal_wildcards_and_quotes_match_only_themselves(api, platform_key, seeded, value):
    """`%` and `_` are not LIKE wildcards, and a quote does not end the string: a keyword finds the
    records that hold it, and only those."""

    holder = make_usage(userorgid="acme", error_message=f"upstream said {value} and hung up", userid=value)

    native = get(api, platform_key, "/api/llmusage/search/", {"keyword": value}).json()["results"]
    newapi = get(api, platform_key, "/api/log/search", {"keyword": value}).json()["data"]
    by_userid = get(api, platform_key, "/api/llmusage/", {"userid": value}).json()["results"]

    assert [row["id"] for row in native] == [str(holder.pk)]
    assert [row["id"] for row in newapi] == [type(holder).objects.get(pk=holder.pk).seq]  # new-api's id: seq
    assert [row["id"] for row in by_userid] == [str(holder.pk)]


# --- times far away ---------------------------------------------------------------------------------

FAR_NATIVE = [
    "0",
    "-1",
    "-62135596800",
    "253402300799",
    "253402300800",
    "1e20",
    "99999999999999999999999",
    "0001-01-01",
    "0001-01-01T00:00:00+14:00",
    "9999-12-31",
    "9999-12-31T23:59:59-12:00",
    "10000-01-01",
    "2026-13-45",
    "1970-01-01T00:00:00Z",
]
FAR_UNIX = [
    "1",
    "-1",
    "0.5",
    "1e3",
    "253402127999",
    "253402128000",
    "253402214399",
    "99999999999999999999999",
    "abc",
]
NATIVE_TIME_READS = [
    "/api/llmusage/",
    "/api/llmusage/count/",
    "/api/llmusage/stats/",
    "/api/llmusage/search/",
    "/api/llmusage-history/",
    "/api/llmusage-history/count/",
]


FAR_BOUNDS = ("start_time", "end_time")


def newapi_range_empty(body: dict) -> bool:
    """new-api's answer when the time range holds no record: /stat's rpm and tpm are the last minute's,
    whatever the range, so only its quota says the range is empty."""
    data = body["data"]
    return data["quota"] == 0 if "quota" in data else newapi_empty(body)


def assert_a_far_bound(
    answers: dict[str, Any], *, everything: Any, found_nothing: Callable[[Any], bool]
) -> None:
    """`answers`: the same far time as a lower and as an upper bound (parameter name -> response). A far
    time lies before or after every record, so a bound that is answered keeps every record or none, and
    the lower and the upper bound never agree: a 200 is read, not only counted as no 500."""
    kept = {}
    for name, response in answers.items():
        if response.status_code != 200:
            assert_clean_refusal(response, [name])
            continue
        body = response.json()
        kept[name] = body == everything
        assert kept[name] or found_nothing(body), (name, response.content[:500])
    if len(kept) == 2:
        assert len(set(kept.values())) == 2, {name: answers[name].content[:300] for name in kept}


@pytest.mark.parametrize("tz", ["UTC", "Pacific/Kiritimati", "Etc/GMT+12"])
@pytest.mark.parametrize("value", FAR_NATIVE)
def test_far_times_in_native_filters_are_answered_or_named(api, platform_key, seeded, value, tz):
    keyword = {"keyword": ACME_MARK + "-user"}
    with override_settings(TIME_ZONE=tz):
        for path in NATIVE_TIME_READS:
            everything = get(api, platform_key, path, keyword).json()
            answers = {name: get(api, platform_key, path, {name: value, **keyword}) for name in FAR_BOUNDS}
            assert_a_far_bound(answers, everything=everything, found_nothing=native_empty)
            for day in ("0001-01-01", "9999-12-31", "1900-01-01", "9999-12-30"):
                response = get(api, platform_key, path, {"use_date": day, "keyword": "x"})
                if response.status_code != 200:
                    assert_clean_refusal(response, ["use_date"])
                else:
                    assert native_empty(response.json())


@pytest.mark.parametrize("tz", ["UTC", "Pacific/Kiritimati"])
@pytest.mark.parametrize("value", FAR_UNIX)
def test_far_times_in_dialect_filters_are_answered_or_named(api, platform_key, seeded, value, tz):
    ms = value + "000" if value.isdigit() else value
    with override_settings(TIME_ZONE=tz):
        calls = [
            (path, {name: value}, name)
            for path in ("/api/log/", "/api/log/self", "/api/log/stat", "/api/log/self/stat")
            for name in ("start_timestamp", "end_timestamp")
        ]
        calls += [("/api/logs/search", {name: ms}, name) for name in ("start_timestamp", "end_timestamp")]
        calls += [("/api/log/acme/search", {name: ms}, name) for name in ("start_timestamp", "end_timestamp")]
        for path in {path for path, _, _ in calls}:
            everything = get(api, platform_key, path).json()
            answers = {name: get(api, platform_key, path, params) for p, params, name in calls if p == path}
            empty = aiproxy_empty if "search" in path else newapi_range_empty
            assert_a_far_bound(answers, everything=everything, found_nothing=empty)
        total = post_json(api, platform_key, "/api/llm-log/count", {"query": {}}).json()["count"]
        counts = {}
        for operator in ("GreaterThan", "LessThan"):
            query = {"createdAt": {"_type": operator, "value": value}}
            response = post_json(api, platform_key, "/api/llm-log/count", {"query": query})
            if response.status_code != 200:
                assert_clean_refusal(response, ["createdAt"])
            else:
                counts[operator] = response.json()["count"]
        if len(counts) == 2:  # every record is on one side of a far time
            assert sorted(counts.values()) == [0, total], counts
        else:
            assert set(counts.values()) <= {0, total}, counts
        stored = LLMUsage.objects.count() + LLMUsageHistory.objects.count()
        deleted = api.delete(f"/api/log/?target_timestamp={value}", **bearer(platform_key))
        if deleted.status_code != 200:
            assert_clean_refusal(deleted, ["target_timestamp"])
            assert LLMUsage.objects.count() + LLMUsageHistory.objects.count() == stored  # nothing deleted
        else:  # the answer is what it deleted; records not accounted yet are never deleted
            gone = stored - LLMUsage.objects.count() - LLMUsageHistory.objects.count()
            assert deleted.json()["data"] == gone, deleted.content[:300]
            assert LLMUsage.objects.exclude(accounting_status="accounted").count() == 6


def test_the_far_past_and_future_bound_what_they_should(api, platform_key, seeded):
    everything = get(api, platform_key, "/api/llmusage/count/", {"start_time": "1900-01-01"}).json()
    nothing = get(api, platform_key, "/api/llmusage/count/", {"start_time": "9999-12-30"}).json()
    newapi = get(api, platform_key, "/api/log/", {"end_timestamp": "253402127999"}).json()["data"]

    assert everything["count"] == 10
    assert nothing["count"] == 0
    assert newapi["total"] == 10


# --- ids that are not ids ---------------------------------------------------------------------------

NOT_IDS = [
    "abc",
    "1",
    "0.5",
    "-1",
    "..",
    "' OR '1'='1",
    "<script>",
    "%00",
    "00000000-0000-0000-0000",
    "x" * 300,
]


def id_paths() -> list[tuple[str, str, str]]:
    """(METHOD, path template, parameter) of every operation in the schema whose path takes an id."""
    schema = SchemaGenerator().get_schema(request=None, public=True)
    found = []
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            for parameter in operation.get("parameters", []):
                if parameter["in"] == "path":
                    found.append((method.upper(), path, parameter["name"]))
    return found


@pytest.mark.parametrize("value", NOT_IDS, ids=lambda v: v[:12])
def test_a_path_id_that_is_no_id_is_a_400_or_404_never_a_500(api, platform_key, seeded, value):
    paths = id_paths()
    assert {path for _, path, _ in paths} >= {
        "/api/llmusage/{id}/",
        "/api/llmusage-history/{id}/",
        "/api/llm-log/{id}/get-item",
        "/api/accounting-failures/{id}/",
        "/api/accounts/{org}/",
        "/api/log/{group}/search",
    }
    for method, template, name in paths:
        path = template.replace("{" + name + "}", quote(value, safe=""))
        body = json.dumps({} if method != "PATCH" else {"feature": "x"})
        response = api.generic(
            method, path, data=body, content_type="application/json", **bearer(platform_key)
        )
        assert response.status_code < 500, (method, path, response.content[:300])
        if name in ("org", "group"):
            continue  # free text: any value is an org, maybe one without records (404 or empty)
        if value == "1" and "accounting-failures" in template:
            continue  # failure ids are integers: 1 is one
        assert response.status_code in (400, 404), (method, path, response.status_code)
        if response.status_code == 400:  # names the parameter it refuses
            assert name in response.content.decode(), response.content
    assert LLMUsage.objects.count() == 8


# --- bodies and JSON parameters no parser can follow -------------------------------------------------


def body_paths() -> list[tuple[str, str]]:
    """(METHOD, path template) of every operation in the schema that takes a JSON body."""
    schema = SchemaGenerator().get_schema(request=None, public=True)
    return [
        (method.upper(), path)
        for path, operations in schema["paths"].items()
        for method, operation in operations.items()
        if "application/json" in operation.get("requestBody", {}).get("content", {})
    ]


@pytest.mark.parametrize("body", ["[" * 100_000, '{"a":' * 100_000, "[" * 999 + "]" * 999, "nul\u0000"])
def test_a_body_nested_past_any_parser_or_not_json_is_a_400(api, platform_key, seeded, body):
    record = seeded["acme"].hot[0]
    for method, template in body_paths():
        path = template.replace("{id}", str(record.pk)).replace("{org}", "acme")
        if "accounting-failures/{id}" in template:
            path = template.replace("{id}", "1")
        response = api.generic(
            method, path, data=body, content_type="application/json", **bearer(platform_key)
        )
        assert 400 <= response.status_code < 500, (method, path, response.status_code, response.content[:200])


def test_a_deep_json_query_parameter_is_a_400(api, platform_key, seeded):
    response = get(api, platform_key, "/api/llm-log/get-list", {"query": "[" * 50_000})

    assert_clean_refusal(response, ["query"])


@pytest.mark.parametrize(
    "metadata",
    [{"a": "x\u0000"}, {"x\u0000": 1}, {"deep": json.loads("[" * 100 + "]" * 100)}, {"big": "x" * 9000}],
)
def test_a_correction_holding_what_ingest_refuses_is_a_400(api, platform_key, seeded, metadata):
    record = seeded["acme"].hot[0]

    body = json.dumps({"metadata": metadata})
    response = api.patch(
        f"/api/llmusage/{record.pk}/", body, content_type="application/json", **bearer(platform_key)
    )

    # Named as a field, or by its JSON path when the parser refuses the text (NUL) before any field.
    assert response.status_code == 400 and "metadata" in response.content.decode(), response.content
    record.refresh_from_db()
    assert record.metadata == {"incidentId": f"{ACME_MARK}-incident", "tag": ACME_MARK}


# --- the admin escapes what it shows ----------------------------------------------------------------

XSS = '<script>alert("xss")</script>'
RAW = re.compile(r"<script>alert\(")


@pytest.fixture
def xss_record(db):
    from accounting.failures import FailedPosting, failures_record

    fields = dict.fromkeys(
        ("userid", "userorgid", "token_name", "group", "feature", "llmid", "ownerid", "provider"), XSS
    )
    record = make_usage(
        transno=XSS,
        model_name=XSS,
        username=XSS,
        error_message=f"failed: {XSS}",
        endpoint=XSS,
        metadata={XSS: XSS},
        ioinfo={"request": XSS, "response": XSS, "truncated": False},
        status="failed",
        accounting_status="failed",
        **fields,
    )
    old = make_usage(model=LLMUsageHistory, transno=f"{XSS}-old", model_name=XSS, userid=XSS)
    failures_record(
        failures=[
            FailedPosting(
                usage_id=record.pk,
                transno=XSS,
                use_date=record.use_date,
                error_code="internal",
                error_message=XSS,
                userid=XSS,
                userorgid=XSS,
                model_name=XSS,
            )
        ]
    )
    return record, old


def assert_escaped(html: str) -> None:
    assert not RAW.search(html), html[max(0, RAW.search(html).start() - 300) : RAW.search(html).end() + 100]
    assert "&lt;script&gt;alert(" in html


def test_the_admin_escapes_everything_stored(admin_client, xss_record):
    record, old = xss_record
    pages = [
        reverse("admin:llmlog_llmusage_changelist"),
        reverse("admin:llmlog_llmusage_changelist") + "?q=" + quote(XSS),
        reverse("admin:llmlog_llmusage_change", args=[record.pk]),
        reverse("admin:llmlog_llmusagehistory_changelist"),
        reverse("admin:llmlog_llmusagehistory_change", args=[old.pk]),
        reverse("admin:accounting_accountingfailure_changelist"),
    ]
    for page in pages:
        response = admin_client.get(page)
        assert response.status_code == 200, page
        assert_escaped(response.content.decode())


def test_the_dashboard_escapes_org_and_model_names(admin_client, xss_record):
    from llmlog.rollups import build_usage_rollups

    build_usage_rollups()
    everything = admin_client.get("/admin/dashboard/")
    one_org = admin_client.get("/admin/dashboard/", {"org": XSS})

    for response in (everything, one_org):
        assert response.status_code == 200
        html = response.content.decode()
        assert not RAW.search(html)
        assert "&lt;script&gt;" in html


# --- text no query can hold: NUL, lone surrogates; numbers past a column ---------------------------

NUL = "a\x00b"


def test_a_nul_in_the_search_keyword_is_a_400_naming_it(api, platform_key, seeded):
    response = get(api, platform_key, "/api/llmusage/search/", {"keyword": NUL})

    assert response.status_code == 400
    assert response.json() == {"keyword": ["Must not contain NUL characters."]}


def text_parameters() -> list[tuple[str, str]]:
    """(path, parameter) of every GET query parameter in the schema, on paths without a path parameter."""
    schema = SchemaGenerator().get_schema(request=None, public=True)
    return [
        (path, parameter["name"])
        for path, operations in schema["paths"].items()
        if "{" not in path
        for parameter in operations.get("get", {}).get("parameters", [])
        if parameter["in"] == "query"
    ]


def test_a_nul_in_any_query_parameter_is_a_4xx_naming_it(api, platform_key, seeded):
    parameters = text_parameters()
    assert ("/api/llmusage/", "userorgid") in parameters and ("/api/log/", "token_name") in parameters

    for path, name in parameters:
        response = get(api, platform_key, path, {name: NUL})
        assert response.status_code < 500, (path, name, response.content[:300])
        if path.startswith(("/api/accounts/", "/api/accounting-failures/")) and response.status_code == 200:
            continue  # the ledger's lists may ignore an ordering they do not know, NUL or not
        assert 400 <= response.status_code < 500, (path, name, response.status_code, response.content[:300])
        assert name in response.content.decode(), (path, name, response.content[:300])
    assert LLMUsage.objects.count() == 8


@pytest.mark.parametrize("path", ["/api/llm-log/get-list", "/api/llm-log/count"])
@pytest.mark.parametrize(
    "body",
    [
        '{"query": {"modelName": "\\udcff"}}',
        '{"query": {"userId": {"_type": "Search", "value": "\\ud800"}}}',
        '{"query": {"\\udcff": "x"}}',
        '{"select": {"\\udcff": true}}',
        '{"sort": {"\\ud800": "Ascending"}}',
        '{"query": {"modelName": "a\\u0000b"}}',
    ],
)
def test_a_lone_surrogate_or_nul_in_a_oneuptime_body_is_a_400(api, platform_key, seeded, path, body):
    response = api.post(path, data=body, content_type="application/json", **bearer(platform_key))

    assert response.status_code == 400, response.content[:300]
    part = next(name for name in ("select", "query", "sort") if name in body)
    message = response.json()["message"]
    assert part in message and ("NUL" in message or "surrogate" in message), message


def test_a_lone_surrogate_in_a_oneuptime_get_query_is_a_400(api, platform_key, seeded):
    response = get(api, platform_key, "/api/llm-log/get-list", {"query": '{"modelName": "\\udcff"}'})

    assert response.status_code == 400
    assert response.json() == {"message": "query: Must be valid Unicode text (a lone surrogate is not)."}


@pytest.mark.parametrize(
    ("ordering", "value"),
    [
        ("total_tokens", "9" * 30),
        ("-total_tokens", "-" + "9" * 25),
        ("amount", "1e999"),
        ("amount", "NaN"),
        ("cost", "9" * 40),
        ("use_time", "2026-11-20T10:15:00"),
        ("total_tokens", 5),
    ],
)
def test_a_forged_cursor_past_any_column_is_a_400_naming_cursor(api, platform_key, seeded, ordering, value):
    import base64

    position = {"o": ordering, "v": value, "id": "00000000-0000-0000-0000-000000000000"}
    cursor = base64.urlsafe_b64encode(json.dumps(position).encode()).decode()

    response = get(api, platform_key, "/api/llmusage/", {"ordering": ordering, "cursor": cursor})

    assert response.status_code == 400
    assert response.json() == {"cursor": ["Not a cursor from this API (use `next_cursor`)."]}


@pytest.mark.parametrize(
    ("path", "name", "value"),
    [
        ("/api/llmusage/", "page", "9" * 30),
        ("/api/llmusage/", "page_size", "1_0"),
        ("/api/llmusage/", "page", "\u0661"),
        ("/api/log/", "p", "9" * 30),
        ("/api/log/", "page_size", "1_0"),
        ("/api/logs/search", "page", "\u0661"),
    ],
)
def test_page_numbers_take_ascii_digits_within_bounds(api, platform_key, seeded, path, name, value):
    response = get(api, platform_key, path, {name: value})

    assert_clean_refusal(response, [name])


def test_an_arabic_digit_time_is_no_unix_time(api, platform_key, seeded):
    response = get(api, platform_key, "/api/llmusage/count/", {"start_time": "\u0661\u0662\u0663"})

    assert response.status_code == 400 and "start_time" in response.json()


ADMIN_LISTS = [
    ("admin:llmlog_llmusage_changelist", "userorgid"),
    ("admin:llmlog_llmusage_changelist", "transno"),
    ("admin:llmlog_llmusagehistory_changelist", "model_name__exact"),
    ("admin:accounting_accountingfailure_changelist", "userorgid"),
    ("admin:accounting_accountingfailure_changelist", "status__exact"),
    ("admin:accounting_account_changelist", "org"),
    ("admin:accounting_ledgerline_changelist", "account__org"),
]


@pytest.mark.parametrize(("name", "param"), ADMIN_LISTS)
def test_a_nul_in_an_admin_filter_shows_the_list_unfiltered_with_an_error(admin_client, seeded, name, param):
    url = reverse(name)

    response = admin_client.get(f"{url}?{param}=a%00b")

    assert response.status_code == 200
    assert response.context["cl"].result_count == response.context["cl"].root_queryset.count()
    messages = [str(message) for message in response.context["messages"]]
    assert messages == [f"Filter '{param}' ignored: must not contain NUL characters."]


@pytest.mark.parametrize(
    "name", ["admin:llmlog_llmusage_export_csv", "admin:accounting_accountingfailure_export_csv"]
)
def test_a_nul_in_a_csv_export_filter_is_a_400(admin_client, seeded, name):
    response = admin_client.get(reverse(name) + "?userorgid=a%00b")

    assert response.status_code == 400
    assert b"userorgid: must not contain NUL characters" in response.content


def test_a_nul_in_the_dashboard_org_is_ignored_and_said(admin_client, seeded):
    response = admin_client.get("/admin/dashboard/?org=a%00b")

    assert response.status_code == 200
    assert [str(m) for m in response.context["messages"]] == ["Ignored org: Must not contain NUL characters."]
    assert response.context["org"] == ""
