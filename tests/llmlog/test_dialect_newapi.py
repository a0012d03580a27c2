"""new-api's log module (seeds/new-api-log-module.txt): the /api/log/ family."""

import hashlib
import json
from datetime import UTC, datetime, timedelta

import pytest
from django.contrib.auth.models import Permission
from django.db import connection
from django.utils import timezone

from llmlog.models import AccountingStatus, LLMUsage, UsageAll
from llmlog.retention import usage_delete_before
from tests.conftest import bearer
from tests.dialect_schemas import dialect_answers_match_the_seeds  # noqa: F401 - autouse: every answer checked
from tests.factories import ingest_records, move_to_history, usage_payload

pytestmark = pytest.mark.django_db

# The seed's admin item, field for field.
ADMIN_ITEM_FIELDS = {
    "id", "user_id", "created_at", "type", "content", "username", "token_name", "model_name", "quota",
    "prompt_tokens", "completion_tokens", "use_time", "is_stream", "channel_id", "channel_name", "token_id",
    "group", "ip", "other",
}  # fmt: skip
T0 = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)


def seq_of(record_id: str) -> int:
    return UsageAll.objects.get(pk=record_id).seq


def at(seconds: int) -> str:
    return (T0 + timedelta(seconds=seconds)).isoformat()


def unix(seconds: int = 0) -> int:
    return int((T0 + timedelta(seconds=seconds)).timestamp())


def test_self_answers_the_seed_request_in_the_seed_shape(api, acme_key):
    record_id, _ = ingest_records(
        usage_payload(
            use_time=at(0),
            token_name="api_token",
            token_id="1",
            model_name="gpt-4",
            group="default",
            userid="1",
            username="testuser",
            channel_id="1",
            provider="OpenAI渠道",
            request_ip="192.168.1.1",
            finish_seconds=2.4,
            responsed_seconds=0.35,
            is_stream=True,
            input_tokens=50,
            output_tokens=100,
            cached_tokens=10,
            amount="0.01000",
        ),
        usage_payload(use_time=at(0), model_name="gpt-4", token_name="other_token"),
    )

    response = api.get(
        "/api/log/self?p=1&page_size=20&type=2"
        f"&start_timestamp={unix(-3600)}&end_timestamp={unix(3600)}"
        "&token_name=api_token&model_name=gpt-4&group=default",
        **bearer(acme_key),
    )

    assert response.status_code == 200
    answer = response.json()
    assert (answer["success"], answer["message"]) == (True, "")
    assert set(answer["data"]) == {"items", "total", "page", "page_size"}
    assert (answer["data"]["total"], answer["data"]["page"], answer["data"]["page_size"]) == (1, 1, 20)
    [item] = answer["data"]["items"]
    assert set(item) == ADMIN_ITEM_FIELDS
    assert item["id"] == seq_of(record_id)  # the record's sequential number, as new-api's integer ids
    assert item["created_at"] == unix(0)  # unix seconds
    assert item["type"] == 2
    assert item["quota"] == 5000  # 0.01 x 500,000 quota units
    assert (item["prompt_tokens"], item["completion_tokens"]) == (50, 100)
    assert (item["user_id"], item["token_id"], item["channel_id"]) == (1, 1, 1)  # new-api's ids are numbers
    assert (item["username"], item["token_name"], item["model_name"], item["group"]) == (
        "testuser",
        "api_token",
        "gpt-4",
        "default",
    )
    assert (item["use_time"], item["is_stream"], item["channel_name"], item["ip"]) == (
        2,
        True,
        "OpenAI渠道",
        "192.168.1.1",
    )
    other = json.loads(item["other"])
    assert other["frt"] == 350
    assert other["cache_tokens"] == 10
    assert other["request_id"]


def test_type_selects_consume_or_error_and_other_types_find_nothing(api, acme_key):
    ingest_records(
        usage_payload(), usage_payload(status="failed", error_message="upstream 502", amount="0", cost="0")
    )

    def items(log_type: str) -> list[dict]:
        response = api.get(f"/api/log/self?type={log_type}", **bearer(acme_key))
        assert response.status_code == 200, response.json()
        return response.json()["data"]["items"]

    assert [item["type"] for item in items("2")] == [2]
    [error] = items("4")
    assert (error["type"], error["content"]) == (4, "upstream 502")
    assert len(items("0")) == 2
    assert items("1") == [] and items("3") == [] and items("5") == []


def test_times_are_unix_seconds_and_the_end_is_inclusive(api, acme_key):
    ingest_records(
        usage_payload(use_time=at(0)), usage_payload(use_time=at(59)), usage_payload(use_time=at(60))
    )

    response = api.get(
        f"/api/log/self?start_timestamp={unix(0)}&end_timestamp={unix(59)}", **bearer(acme_key)
    ).json()

    assert sorted(item["created_at"] for item in response["data"]["items"]) == [unix(0), unix(59)]


def test_pages_with_p_and_page_size(api, acme_key):
    ingest_records(*[usage_payload(use_time=at(minute * 60)) for minute in range(5)])

    page2 = api.get("/api/log/self?p=2&page_size=2", **bearer(acme_key)).json()["data"]

    assert (page2["total"], page2["page"], page2["page_size"]) == (5, 2, 2)
    assert [item["created_at"] for item in page2["items"]] == [unix(120), unix(60)]


@pytest.mark.parametrize(
    ("query", "named"),
    [
        ("page_size=101", "page_size"),
        ("p=0", "p"),
        ("p=abc", "p"),
        ("p=101&page_size=100", "p"),  # past the page-depth cap
        ("type=9", "type"),
        ("model_name=gpt%00", "model_name"),
        ("type=consume", "type"),
        ("start_timestamp=yesterday", "start_timestamp"),
        ("end_timestamp=1e400", "end_timestamp"),
        (f"start_timestamp={unix(10)}&end_timestamp={unix(0)}", "end_timestamp"),
    ],
)
def test_bad_input_is_a_400_in_the_envelope_naming_the_parameter(api, acme_key, query, named):
    response = api.get(f"/api/log/self?{query}", **bearer(acme_key))

    assert response.status_code == 400
    answer = response.json()
    assert answer["success"] is False
    assert answer["message"].startswith(f"{named}:"), answer


def test_the_admin_list_needs_a_platform_key_and_sees_every_org(api, acme_key, platform_key):
    ingest_records(usage_payload(username="ada"), usage_payload(userorgid="globex", username="bob"))

    org = api.get("/api/log/", **bearer(acme_key))
    platform = api.get("/api/log/?username=bob&p=1&page_size=20", **bearer(platform_key))
    everyone = api.get("/api/log/", **bearer(platform_key)).json()["data"]

    assert org.status_code == 403
    assert org.json()["success"] is False
    assert "/api/log/self" in org.json()["message"]
    assert [item["username"] for item in platform.json()["data"]["items"]] == ["bob"]
    assert len(everyone["items"]) == 2


def test_self_is_the_keys_org_and_a_platform_keys_self_is_every_org(api, acme_key, globex_key, platform_key):
    ingest_records(usage_payload(), usage_payload(), usage_payload(userorgid="globex"))

    def total(key: str) -> int:
        # (any filter: unfiltered, a platform key's total is PostgreSQL's estimate of the whole table)
        return api.get("/api/log/self?start_timestamp=1", **bearer(key)).json()["data"]["total"]

    assert (total(acme_key), total(globex_key), total(platform_key)) == (2, 1, 3)


def test_stat_answers_quota_rpm_and_tpm(api, acme_key, platform_key):
    now = timezone.now()
    ingest_records(
        usage_payload(use_time=at(0), amount="1.50000"),
        usage_payload(use_time=at(0), amount="0.25000", model_name="o3-mini"),
        usage_payload(use_time=(now - timedelta(seconds=10)).isoformat(), amount="0.10000"),
        usage_payload(
            use_time=(now - timedelta(seconds=20)).isoformat(), amount="0.10000", model_name="o3-mini"
        ),
        usage_payload(
            use_time=(now - timedelta(seconds=5)).isoformat(), status="failed", amount="0", cost="0"
        ),
        usage_payload(use_time=(now - timedelta(seconds=5)).isoformat(), userorgid="globex", amount="9"),
    )

    mine = api.get("/api/log/self/stat?type=2", **bearer(acme_key)).json()
    in_range = api.get(
        f"/api/log/self/stat?type=2&start_timestamp={unix(-60)}&end_timestamp={unix(60)}", **bearer(acme_key)
    ).json()
    one_model = api.get("/api/log/self/stat?model_name=o3-mini", **bearer(acme_key)).json()
    everyone = api.get("/api/log/stat", **bearer(platform_key)).json()

    assert mine["success"] is True
    assert mine["data"] == {"quota": 975_000, "rpm": 2, "tpm": 3000}  # 1.95 x 500,000
    assert in_range["data"]["quota"] == 875_000
    assert in_range["data"]["rpm"] == 2  # rpm and tpm are the last 60 s whatever the range
    assert one_model["data"] == {"quota": 175_000, "rpm": 1, "tpm": 1500}
    assert everyone["data"]["quota"] == 5_475_000
    assert everyone["data"]["rpm"] == 3


def test_stat_filters_the_rollups_cannot_answer_sum_the_rows(api, acme_key):
    ingest_records(usage_payload(amount="1", token_name="a"), usage_payload(amount="2", token_name="b"))

    answer = api.get("/api/log/self/stat?token_name=b", **bearer(acme_key)).json()

    assert answer["data"]["quota"] == 1_000_000


def test_the_admin_stat_needs_a_platform_key(api, acme_key):
    response = api.get("/api/log/stat", **bearer(acme_key))

    assert response.status_code == 403
    assert response.json()["success"] is False


def test_search_finds_by_keyword_and_self_search_stays_in_the_org(api, acme_key, platform_key):
    ingest_records(
        usage_payload(transno="req-needle"),
        usage_payload(userorgid="globex", model_name="needle-model"),
        usage_payload(status="failed", error_message="Context length exceeded", amount="0", cost="0"),
    )

    mine = api.get("/api/log/self/search?keyword=needle-model", **bearer(acme_key)).json()
    by_transno = api.get("/api/log/self/search?keyword=req-needle", **bearer(acme_key)).json()
    by_error = api.get("/api/log/self/search?keyword=context length", **bearer(acme_key)).json()
    everyone = api.get("/api/log/search?keyword=needle-model", **bearer(platform_key)).json()
    org_on_admin = api.get("/api/log/search?keyword=needle-model", **bearer(acme_key))
    no_keyword = api.get("/api/log/self/search", **bearer(acme_key))

    assert mine == {"success": True, "message": "", "data": []}
    assert len(by_transno["data"]) == 1
    assert [item["type"] for item in by_error["data"]] == [4]
    assert [item["model_name"] for item in everyone["data"]] == ["needle-model"]
    assert org_on_admin.status_code == 403
    assert no_keyword.status_code == 400
    assert no_keyword.json()["message"].startswith("keyword:")


def test_token_finds_the_records_of_a_gateway_key_with_cors(api):
    ingest_records(
        usage_payload(token_key="sk-secret-1", model_name="gpt-4"),
        usage_payload(token_key="sk-secret-1", userorgid="globex"),
        usage_payload(token_key="sk-secret-2"),
    )

    response = api.get("/api/log/token?key=sk-secret-1", HTTP_ORIGIN="https://chat.example")
    without_prefix = api.get("/api/log/token?key=secret-1").json()
    unknown = api.get("/api/log/token?key=sk-nobody").json()
    preflight = api.options(
        "/api/log/token?key=x", HTTP_ORIGIN="https://chat.example", HTTP_ACCESS_CONTROL_REQUEST_METHOD="GET"
    )
    missing = api.get("/api/log/token")

    assert response.status_code == 200
    assert response["Access-Control-Allow-Origin"] == "*"
    answer = response.json()
    assert answer["success"] is True
    assert len(answer["data"]) == 2  # the key's records, whatever org reported them
    assert {"id", "type", "content", "model_name", "quota", "created_at"} <= set(answer["data"][0])
    assert len(without_prefix["data"]) == 2
    assert unknown == {"success": True, "message": "", "data": []}
    assert preflight.status_code == 204
    assert preflight["Access-Control-Allow-Origin"] == "*"
    assert "GET" in preflight["Access-Control-Allow-Methods"]
    assert missing.status_code == 400
    assert missing["Access-Control-Allow-Origin"] == "*"
    assert missing.json() == {"success": False, "message": "key: key is required."}


def test_token_stores_only_the_hash_of_the_gateway_key():
    ingest_records(usage_payload(token_key="sk-secret-1"))

    stored = UsageAll.objects.get()

    assert stored.token_key_hash == hashlib.sha256(b"sk-secret-1").hexdigest()


def accounting(record_ids: list[str], status: str) -> None:
    LLMUsage.objects.filter(pk__in=record_ids).update(accounting_status=status)


def test_delete_removes_accounted_and_skipped_records_before_the_time_never_pending_or_failed(api, make_key):
    admin = make_key(org="", role="admin", scopes=("read",))
    accounted, skipped, pending, failed, recent = ingest_records(
        *[usage_payload(use_time=at(0)) for _ in range(4)], usage_payload(use_time=at(120))
    )
    accounting([accounted, recent], AccountingStatus.ACCOUNTED)
    accounting([skipped], AccountingStatus.SKIPPED)
    accounting([failed], AccountingStatus.FAILED)
    [moved] = ingest_records(usage_payload(use_time=at(-86400)))
    accounting([moved], AccountingStatus.ACCOUNTED)
    move_to_history(moved)

    response = api.delete(f"/api/log/?target_timestamp={unix(60)}", **bearer(admin))

    assert response.status_code == 200
    assert response.json() == {"success": True, "message": "", "data": 3}
    assert {str(pk) for pk in UsageAll.objects.values_list("id", flat=True)} == {pending, failed, recent}


def test_an_org_admin_deletes_only_its_orgs_records(api, make_key):
    acme_admin = make_key(org="acme", role="owner", scopes=("read",))
    mine, theirs = ingest_records(
        usage_payload(use_time=at(0)), usage_payload(use_time=at(0), userorgid="globex")
    )
    accounting([mine, theirs], AccountingStatus.ACCOUNTED)

    response = api.delete(f"/api/log/?target_timestamp={unix(60)}", **bearer(acme_admin))

    assert response.json()["data"] == 1
    assert list(UsageAll.objects.values_list("userorgid", flat=True)) == ["globex"]


def test_delete_needs_an_admin_role_and_a_target_timestamp(api, acme_key, platform_key):
    member = api.delete(f"/api/log/?target_timestamp={unix()}", **bearer(acme_key))
    missing = api.delete("/api/log/", **bearer(platform_key))
    malformed = api.delete("/api/log/?target_timestamp=tomorrow", **bearer(platform_key))

    assert member.status_code == 403
    assert member.json()["success"] is False
    assert missing.status_code == 400
    assert missing.json() == {"success": False, "message": "target_timestamp: target timestamp is required"}
    assert malformed.status_code == 400
    assert malformed.json()["message"].startswith("target_timestamp:")


def test_usage_delete_before_works_in_batches_over_both_tables():
    ids = ingest_records(*[usage_payload(use_time=at(-n)) for n in range(7)])
    accounting(ids, AccountingStatus.ACCOUNTED)
    for record_id in ids[:3]:
        move_to_history(record_id)
    [kept] = ingest_records(usage_payload(use_time=at(-1000)))

    deleted = usage_delete_before(before=T0 + timedelta(seconds=1), batch_size=2)

    assert deleted == 7
    assert [str(pk) for pk in UsageAll.objects.values_list("id", flat=True)] == [kept]


def test_a_record_moved_to_history_is_still_listed_counted_and_summed(api, acme_key):
    old, new = ingest_records(
        usage_payload(use_time=at(-86400), amount="2"), usage_payload(use_time=at(0), amount="1")
    )
    move_to_history(old)

    listed = api.get("/api/log/self", **bearer(acme_key)).json()["data"]
    stat = api.get(f"/api/log/self/stat?start_timestamp={unix(-90000)}", **bearer(acme_key)).json()["data"]
    found = api.get(f"/api/log/self/search?keyword={old}", **bearer(acme_key)).json()["data"]

    assert [item["id"] for item in listed["items"]] == [seq_of(new), seq_of(old)]
    assert listed["total"] == 2
    assert stat["quota"] == 1_500_000
    assert [item["id"] for item in found] == [seq_of(old)]


def test_the_list_takes_a_fixed_number_of_queries(api, acme_key, django_assert_max_num_queries):
    ingest_records(*[usage_payload() for _ in range(30)])

    # the API key, where the rollups stand (built through, stale hours), the count, the page
    with django_assert_max_num_queries(4):
        response = api.get("/api/log/self?p=1&page_size=50&type=2", **bearer(acme_key))

    assert len(response.json()["data"]["items"]) == 30


def test_quota_is_an_integer_in_quota_units(api, acme_key):
    ingest_records(usage_payload(amount="12.34567"))

    [item] = api.get("/api/log/self", **bearer(acme_key)).json()["data"]["items"]

    assert item["quota"] == 6_172_835  # 12.34567 x 500,000, an integer as new-api's
    assert type(item["quota"]) is int


@pytest.mark.postgres
def test_an_unfiltered_admin_list_total_is_the_planners_estimate_and_says_so(api, platform_key, monkeypatch):
    # Estimates start at selectors.COUNT_ESTIMATE_FLOOR rows (fewer are counted): lowered to 1 here.
    monkeypatch.setattr("llmlog.selectors.totals.COUNT_ESTIMATE_FLOOR", 1)
    ingest_records(usage_payload(), usage_payload(userorgid="globex"))
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE llmusage")
        cursor.execute("ANALYZE llmusage_history")

    data = api.get("/api/log/", **bearer(platform_key)).json()["data"]

    assert (data["total"], data["total_is_estimate"]) == (2, True)


def test_the_schema_describes_every_new_api_endpoint(api):
    paths = api.get("/api/schema/", {"format": "json"}).json()["paths"]

    def names(path: str, method: str = "get") -> set[str]:
        return {p["name"] for p in paths[path][method].get("parameters", [])}

    filters = {
        "type",
        "start_timestamp",
        "end_timestamp",
        "username",
        "token_name",
        "model_name",
        "channel",
        "group",
    }
    assert names("/api/log/") == {"p", "page_size"} | filters
    assert names("/api/log/self") == {"p", "page_size"} | filters
    assert names("/api/log/stat") == filters
    assert names("/api/log/self/stat") == filters
    assert names("/api/log/search") == {"keyword"}
    assert names("/api/log/self/search") == {"keyword"}
    assert names("/api/log/token") == {"key"}
    assert names("/api/log/", "delete") == {"target_timestamp"}


def test_a_staff_session_is_new_apis_admin(api, django_user_model):
    ingest_records(usage_payload(), usage_payload(userorgid="globex"))
    staff = django_user_model.objects.create_user("operator", password="x", is_staff=True)
    staff.user_permissions.add(Permission.objects.get(codename="view_llmusage"))  # sessions obey them
    api.force_login(staff)

    response = api.get("/api/log/?start_timestamp=1")

    assert response.status_code == 200
    assert response.json()["data"]["total"] == 2


# --- issue 15: integer ids, quota units, search semantics ------------------------------------------


def test_quota_rounds_each_item_half_to_even_and_stat_adds_the_rounded_items(api, acme_key, settings):
    settings.LLMLOG_NEWAPI_QUOTA_PER_UNIT = 1  # one quota unit per unit of money: halves to round
    ingest_records(*[usage_payload(use_time=at(i), amount=amount) for i, amount in enumerate(HALVES)])

    items = api.get("/api/log/self?page_size=100", **bearer(acme_key)).json()["data"]["items"]
    stat = api.get("/api/log/self/stat", **bearer(acme_key)).json()["data"]

    # newest first: 0.50001 -> 1, 0.49999 -> 0, 2.5 -> 2, 0.5 -> 0 (half to even, never away from zero)
    assert [item["quota"] for item in items] == [1, 0, 2, 0]
    # the sum of the rounded items; a sum rounded once would say 4, SQL's ROUND on each would say 5
    assert stat["quota"] == sum(item["quota"] for item in items) == 3


HALVES = ("0.50000", "2.50000", "0.49999", "0.50001")


@pytest.mark.parametrize("query", ["", "?token_name=t1", "?model_name=o3-mini", "?type=2"])
def test_the_items_of_a_filter_add_up_to_its_stat(api, acme_key, query):
    ingest_records(
        *[
            usage_payload(
                use_time=at(i),
                amount=f"0.0{i}123",
                token_name=f"t{i % 2}",
                model_name=("gpt-4o", "o3-mini")[i % 2],
            )
            for i in range(6)
        ]
    )
    items = api.get(f"/api/log/self{query}{'&' if query else '?'}page_size=100", **bearer(acme_key)).json()
    stat = api.get(f"/api/log/self/stat{query}", **bearer(acme_key)).json()

    assert stat["data"]["quota"] == sum(item["quota"] for item in items["data"]["items"]) > 0


def test_ids_are_integers_the_gateways_or_zero_never_text(api, acme_key):
    ingest_records(
        usage_payload(use_time=at(0), userid="42", token_id="7", channel_id="3"),
        usage_payload(
            use_time=at(1), userid="u-ada", token_id="tok-1", channel_id="ch-anthropic", provider="x"
        ),
    )

    newer, older = api.get("/api/log/self", **bearer(acme_key)).json()["data"]["items"]

    assert (older["user_id"], older["token_id"], older["channel_id"]) == (42, 7, 3)
    assert (newer["user_id"], newer["token_id"], newer["channel_id"]) == (0, 0, 0)
    assert (newer["username"], newer["channel_name"]) == ("Ada", "x")  # the names stay in their fields
    assert isinstance(newer["id"], int) and newer["id"] > older["id"]  # seq, in ingest order


def test_search_matches_a_prefix_of_the_content(api, acme_key, platform_key):
    ingest_records(
        usage_payload(use_time=at(0), model_name="gpt-4o", input_tokens=12, output_tokens=3, cached_tokens=0),
        usage_payload(use_time=at(1), model_name="claude-3-opus"),
        usage_payload(use_time=at(2), model_name="gpt-4o-mini", userorgid="globex"),
    )

    def models(path: str, key: str) -> list[str]:
        path, keyword = path.split("?keyword=")
        answer = api.get(path, {"keyword": keyword}, **bearer(key)).json()
        assert answer["success"] is True, answer
        return [item["model_name"] for item in answer["data"]]

    [item] = api.get("/api/log/self/search?keyword=gpt", **bearer(acme_key)).json()["data"]
    assert item["content"].startswith("gpt")
    assert models("/api/log/self/search?keyword=gpt-4", acme_key) == ["gpt-4o"]  # the seed's example
    assert models("/api/log/search?keyword=gpt", platform_key) == ["gpt-4o-mini", "gpt-4o"]
    assert models("/api/log/self/search?keyword=gpt-4o:", acme_key) == ["gpt-4o"]
    assert models("/api/log/self/search?keyword=gpt-4o: 12 prompt + 3", acme_key) == ["gpt-4o"]
    assert models(f"/api/log/self/search?keyword={item['content'][:-2]}", acme_key) == ["gpt-4o"]
    assert models(f"/api/log/self/search?keyword={item['content']}", acme_key) == ["gpt-4o"]
    assert models("/api/log/self/search?keyword=gpt-4o: 13", acme_key) == []
    assert models("/api/log/self/search?keyword=pt-4o", acme_key) == []  # a prefix, not a substring


def test_search_matches_the_log_type_number(api, acme_key):
    ingest_records(
        usage_payload(use_time=at(0)),
        usage_payload(use_time=at(1), status="failed", error_message="boom", amount="0", cost="0"),
    )

    def types(keyword: str) -> list[int]:
        return [
            item["type"]
            for item in api.get(f"/api/log/self/search?keyword={keyword}", **bearer(acme_key)).json()["data"]
        ]

    assert types("2") == [2]
    assert types("4") == [4]
    assert types("1") == types("3") == types("5") == []
