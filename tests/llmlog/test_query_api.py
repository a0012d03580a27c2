"""The native read API: /api/llmusage/ (list, get-item, count, search, stats, PATCH, DELETE) and
/api/llmusage-history/, over hot and history, org-scoped."""

import base64
import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.db import connection
from django.utils import timezone

from llmlog.api.pagination import UsagePagination
from llmlog.models import LLMUsageHistory
from llmlog.rollups import build_usage_rollups
from tests.conftest import bearer
from tests.factories import QUERY_RECORD, make_usage, move_to_history

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 11, 20, 10, tzinfo=UTC)


@pytest.fixture
def acme_admin_key(make_key) -> str:
    return make_key(org="acme", role="admin")


def get(api, url: str, key: str, **params):
    return api.get(url, params, **bearer(key))


def ids(response) -> list[str]:
    return [row["id"] for row in response.json()["results"]]


# --- list ----------------------------------------------------------------------------------------


def test_list_reads_hot_and_history_newest_first(api, acme_key):
    old = make_usage(QUERY_RECORD, use_time=T0)
    new = make_usage(QUERY_RECORD, use_time=T0 + timedelta(hours=1))
    move_to_history(old)

    response = get(api, "/api/llmusage/", acme_key)

    assert response.status_code == 200
    body = response.json()
    assert ids(response) == [str(new.pk), str(old.pk)]
    assert [row["source"] for row in body["results"]] == ["hot", "history"]
    assert body["results"][1]["backup_time"] is not None
    assert body["results"][0]["amount"] == "0.01000"  # money as a string
    assert "payload_hash" not in body["results"][0]
    assert body["next"] is None and body["next_cursor"] is None and body["page"] == 1


def test_list_never_shows_another_orgs_records(api, acme_key, globex_key, platform_key):
    mine = make_usage(QUERY_RECORD)
    theirs = make_usage(QUERY_RECORD, userorgid="globex")

    assert ids(get(api, "/api/llmusage/", acme_key)) == [str(mine.pk)]
    assert ids(get(api, "/api/llmusage/", globex_key)) == [str(theirs.pk)]
    assert ids(get(api, "/api/llmusage/", acme_key, userorgid="globex")) == []
    assert set(ids(get(api, "/api/llmusage/", platform_key))) == {str(mine.pk), str(theirs.pk)}


def test_list_filters(api, acme_key):
    make_usage(QUERY_RECORD, use_time=T0, model_name="gpt-4o")
    wanted = make_usage(QUERY_RECORD, use_time=T0 + timedelta(hours=2), model_name="claude", status="failed")

    response = get(
        api,
        "/api/llmusage/",
        acme_key,
        start_time=int((T0 + timedelta(hours=1)).timestamp()),
        model_name="claude",
        status="failed",
    )

    assert ids(response) == [str(wanted.pk)]


@pytest.mark.parametrize(
    ("params", "named"),
    [
        ({"status": "bogus"}, "status"),
        ({"accounting_status": "done"}, "accounting_status"),
        ({"start_time": "noon"}, "start_time"),
        ({"end_time": "2026-11-31"}, "end_time"),
        ({"use_date": "tomorrow"}, "use_date"),
        ({"max_amount": "x"}, "max_amount"),
        ({"ordering": "payload_hash"}, "ordering"),
        ({"page_size": "101"}, "page_size"),
        ({"page_size": "0"}, "page_size"),
        ({"page": "two"}, "page"),
        ({"page": "101", "page_size": "100"}, "page"),
        ({"cursor": "not-a-cursor"}, "cursor"),
    ],
)
def test_bad_list_parameters_are_a_400_naming_them(api, acme_key, params, named):
    response = get(api, "/api/llmusage/", acme_key, **params)

    assert response.status_code == 400
    assert named in response.json()


def test_page_numbers_and_cursor_walk_the_same_records(api, acme_key):
    records = [
        make_usage(QUERY_RECORD, use_time=T0 + timedelta(minutes=n % 4)) for n in range(11)
    ]  # many ties
    move_to_history(*records[::3])
    expected = [str(r.pk) for r in sorted(records, key=lambda r: (r.use_time, r.pk), reverse=True)]

    by_page = []
    for page in (1, 2, 3):
        by_page += ids(get(api, "/api/llmusage/", acme_key, page=page, page_size=4))
    by_cursor, params = [], {"page_size": 4}
    while True:
        body = get(api, "/api/llmusage/", acme_key, **params).json()
        by_cursor += [row["id"] for row in body["results"]]
        if not body["next_cursor"]:
            break
        params = {"page_size": 4, "cursor": body["next_cursor"]}

    assert by_page == by_cursor == expected


def test_next_link_follows_the_cursor(api, acme_key):
    first, second = (
        make_usage(QUERY_RECORD, use_time=T0),
        make_usage(QUERY_RECORD, use_time=T0 + timedelta(seconds=1)),
    )

    page1 = get(api, "/api/llmusage/", acme_key, page_size=1).json()
    page2 = api.get(page1["next"], **bearer(acme_key)).json()

    assert [page1["results"][0]["id"], page2["results"][0]["id"]] == [str(second.pk), str(first.pk)]
    assert page2["page"] is None and page2["next"] is None


@pytest.mark.parametrize(
    "ordering", ["amount", "-amount", "total_tokens", "-total_tokens", "use_time", "-cost"]
)
def test_cursor_works_for_every_ordering(api, acme_key, ordering):
    for n in range(7):
        make_usage(
            QUERY_RECORD, amount=Decimal(n % 3) if n != 5 else None, cost=Decimal(n), input_tokens=100 + n % 2
        )
    field = ordering.lstrip("-")
    expected = get(api, "/api/llmusage/", acme_key, ordering=ordering, page_size=100).json()["results"]

    walked, params = [], {"ordering": ordering, "page_size": 2}
    while True:
        body = get(api, "/api/llmusage/", acme_key, **params).json()
        walked += body["results"]
        if not body["next_cursor"]:
            break
        params = {**params, "cursor": body["next_cursor"]}

    assert [row["id"] for row in walked] == [row["id"] for row in expected]
    values = [Decimal(row[field] or 0) if field != "use_time" else row[field] for row in expected]
    assert values == sorted(values, reverse=ordering.startswith("-"))


def test_a_cursor_belongs_to_its_ordering(api, acme_key):
    make_usage(QUERY_RECORD), make_usage(QUERY_RECORD)
    cursor = get(api, "/api/llmusage/", acme_key, page_size=1).json()["next_cursor"]

    response = get(api, "/api/llmusage/", acme_key, cursor=cursor, ordering="amount")

    assert response.status_code == 400
    assert "cursor" in response.json()
    forged = base64.urlsafe_b64encode(json.dumps({"o": "-use_time", "v": "x", "id": "y"}).encode()).decode()
    assert get(api, "/api/llmusage/", acme_key, cursor=forged).status_code == 400


def test_page_numbers_stop_at_the_bounded_depth(api, acme_key):
    last = UsagePagination.MAX_DEPTH // 100
    assert get(api, "/api/llmusage/", acme_key, page=last, page_size=100).status_code == 200
    response = get(api, "/api/llmusage/", acme_key, page=last + 1, page_size=100)
    assert response.status_code == 400
    assert "cursor" in response.json()["page"][0]


def test_list_query_count_is_constant(api, acme_key, django_assert_max_num_queries):
    for _ in range(30):
        make_usage(QUERY_RECORD)
    # the key look-up, the page (one row more than the page, to know if there is a next)
    with django_assert_max_num_queries(2):
        assert len(ids(get(api, "/api/llmusage/", acme_key, page_size=25))) == 25
    cursor = get(api, "/api/llmusage/", acme_key, page_size=10).json()["next_cursor"]
    with django_assert_max_num_queries(2):
        assert len(ids(get(api, "/api/llmusage/", acme_key, cursor=cursor, page_size=10))) == 10


# --- get-item ------------------------------------------------------------------------------------


def test_get_item_hot_or_history(api, acme_key):
    hot, moved = make_usage(QUERY_RECORD), make_usage(QUERY_RECORD)
    move_to_history(moved)

    assert get(api, f"/api/llmusage/{hot.pk}/", acme_key).json()["source"] == "hot"
    body = get(api, f"/api/llmusage/{moved.pk}/", acme_key).json()
    assert body["source"] == "history" and body["transno"] == moved.transno


def test_get_item_of_another_org_is_a_404_and_a_bad_id_a_400(api, acme_key, globex_key):
    record = make_usage(QUERY_RECORD)

    assert get(api, f"/api/llmusage/{record.pk}/", globex_key).status_code == 404
    response = get(api, "/api/llmusage/not-a-uuid/", acme_key)
    assert response.status_code == 400 and "id" in response.json()


def test_get_item_query_count(api, acme_key, django_assert_max_num_queries):
    record = make_usage(QUERY_RECORD)
    with django_assert_max_num_queries(2):
        assert get(api, f"/api/llmusage/{record.pk}/", acme_key).status_code == 200


# --- count ---------------------------------------------------------------------------------------


def test_count_is_scoped_and_filtered(api, acme_key, platform_key, django_assert_max_num_queries):
    make_usage(QUERY_RECORD, status="failed")
    move_to_history(make_usage(QUERY_RECORD), make_usage(QUERY_RECORD))
    make_usage(QUERY_RECORD, userorgid="globex")

    # the key, where the rollups stand, the count (buckets and rows in one statement)
    with django_assert_max_num_queries(3):
        assert get(api, "/api/llmusage/count/", acme_key).json() == {"count": 3, "estimated": False}
    assert get(api, "/api/llmusage/count/", acme_key, status="failed").json()["count"] == 1
    assert get(api, "/api/llmusage/count/", platform_key, userorgid="globex").json() == {
        "count": 1,
        "estimated": False,
    }
    assert get(api, "/api/llmusage/count/", acme_key, status="meh").status_code == 400


def test_unfiltered_count_for_the_platform(api, platform_key):
    for _ in range(3):
        make_usage(QUERY_RECORD)
    move_to_history(make_usage(QUERY_RECORD))
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE llmusage")
            cursor.execute("ANALYZE llmusage_history")

    body = get(api, "/api/llmusage/count/", platform_key).json()

    # Under selectors.COUNT_ESTIMATE_FLOOR rows are counted: exact, whatever the statistics say.
    assert body == {"count": 4, "estimated": False}
    assert get(api, "/api/llmusage-history/count/", platform_key).json()["count"] == 1


def _statistics_say(*, reltuples: int, relpages: int) -> None:
    """Make the planner's statistics of both usage tables (and history's partitions) say this, as they
    do for a table never analysed (-1, 0) or analysed while empty (0, 0); rolled back with the test."""
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE pg_class SET reltuples = %s, relpages = %s WHERE relname LIKE 'llmusage%%' "
            "AND relkind IN ('r', 'p')",
            [reltuples, relpages],
        )


@pytest.mark.postgres
@pytest.mark.parametrize(("reltuples", "relpages"), [(-1, 0), (0, 0), (-1, 3)])
def test_an_unfiltered_count_is_never_0_for_a_table_with_rows(api, platform_key, reltuples, relpages):
    for _ in range(3):
        make_usage(QUERY_RECORD)
    move_to_history(make_usage(QUERY_RECORD))
    _statistics_say(reltuples=reltuples, relpages=relpages)

    assert get(api, "/api/llmusage/count/", platform_key).json() == {"count": 4, "estimated": False}
    assert get(api, "/api/llmusage-history/count/", platform_key).json() == {"count": 1, "estimated": False}
    listed = api.post("/api/llm-log/count", "{}", content_type="application/json", **bearer(platform_key))
    assert listed.json() == {"count": 4}
    newapi = get(api, "/api/log/", platform_key).json()["data"]
    assert (newapi["total"], newapi.get("total_is_estimate")) == (4, None)


@pytest.mark.postgres
def test_past_the_floor_a_count_without_statistics_is_the_floor_and_says_estimated(
    api, platform_key, monkeypatch
):
    monkeypatch.setattr("llmlog.selectors.totals.COUNT_ESTIMATE_FLOOR", 2)
    for _ in range(4):
        make_usage(QUERY_RECORD)
    _statistics_say(reltuples=-1, relpages=0)

    assert get(api, "/api/llmusage/count/", platform_key).json() == {"count": 3, "estimated": True}


# --- search --------------------------------------------------------------------------------------


def test_search_by_keyword_in_hot_and_history(api, acme_key, django_assert_max_num_queries):
    hit = make_usage(QUERY_RECORD, error_message="Upstream timeout after 60s", status="failed")
    by_user = make_usage(QUERY_RECORD, userid="u-search")
    make_usage(QUERY_RECORD)
    move_to_history(hit)

    # the key, one probe of which columns match at all, the page
    with django_assert_max_num_queries(3):
        response = get(api, "/api/llmusage/search/", acme_key, keyword="timeout")
    assert ids(response) == [str(hit.pk)]
    assert ids(get(api, "/api/llmusage/search/", acme_key, keyword="u-search")) == [str(by_user.pk)]
    assert ids(get(api, "/api/llmusage/search/", acme_key, keyword="u-search", status="failed")) == []


def test_search_stays_in_the_org_and_needs_a_keyword(api, globex_key):
    make_usage(QUERY_RECORD, transno="acme-secret-transno")

    assert ids(get(api, "/api/llmusage/search/", globex_key, keyword="acme-secret-transno")) == []
    response = get(api, "/api/llmusage/search/", globex_key)
    assert response.status_code == 400 and "keyword" in response.json()


# --- stats ---------------------------------------------------------------------------------------


def test_stats_shape_and_units(api, acme_key, django_assert_max_num_queries):
    make_usage(QUERY_RECORD, use_time=T0, amount=Decimal("0.5"), cost=Decimal("0.25"), model_name="gpt-4o")
    make_usage(
        QUERY_RECORD,
        use_time=T0 + timedelta(days=1),
        amount=Decimal("1"),
        cost=Decimal("0.5"),
        model_name="claude",
    )
    make_usage(QUERY_RECORD, use_time=timezone.now(), amount=Decimal("2"), cost=Decimal("1"))
    make_usage(QUERY_RECORD, use_time=T0, userorgid="globex", amount=Decimal("100"))

    with django_assert_max_num_queries(5):
        body = get(api, "/api/llmusage/stats/", acme_key, start_time="2026-11-20").json()

    assert body["requests"] == 3
    assert body["amount"] == "3.50000" and body["cost"] == "1.75000"
    assert body["total_tokens"] == 3600 and body["cached_tokens"] == 300
    assert body["rpm"] == 1 and body["tpm"] == 1200
    assert {m["model_name"]: m["requests"] for m in body["by_model"]} == {"gpt-4o": 2, "claude": 1}
    assert body["by_day"][0] == {**body["by_day"][0], "day": "2026-11-20", "requests": 1, "amount": "0.50000"}


def test_stats_are_org_scoped_and_refuse_bad_filters(api, globex_key, platform_key):
    make_usage(QUERY_RECORD, amount=Decimal("7"))

    assert get(api, "/api/llmusage/stats/", globex_key).json()["requests"] == 0
    assert get(api, "/api/llmusage/stats/", platform_key).json()["amount"] == "7.00000"
    response = get(api, "/api/llmusage/stats/", globex_key, end_time="later")
    assert response.status_code == 400 and "end_time" in response.json()


# --- the same answers before and after the nightly move -------------------------------------------


def test_every_read_answers_the_same_before_and_after_the_move_to_history(api, acme_key):
    now = timezone.now()
    records = [
        make_usage(QUERY_RECORD, use_time=now - timedelta(hours=h, minutes=h)) for h in (30, 28, 26, 3, 1)
    ]
    build_usage_rollups()
    window = {"start_time": (now - timedelta(hours=29)).isoformat(), "end_time": now.isoformat()}

    def answers() -> list:
        return [
            ids(get(api, "/api/llmusage/", acme_key, **window)),
            get(api, "/api/llmusage/count/", acme_key, **window).json(),
            get(api, "/api/llmusage/stats/", acme_key, **window).json(),
            ids(get(api, "/api/llmusage/search/", acme_key, keyword="u-1", **window)),
            get(api, f"/api/llmusage/{records[1].pk}/", acme_key).json()["transno"],
        ]

    before = answers()
    move_to_history(*records[:3])
    after = answers()

    assert LLMUsageHistory.objects.count() == 3
    assert before == after
    assert before[1]["count"] == 4


# --- PATCH and DELETE (who may: tests/llmlog/test_edits.py) ----------------------------------------


def test_a_platform_admin_corrects_a_pending_record(api, platform_key):
    record = make_usage(QUERY_RECORD, accounting_status="pending")

    response = api.patch(
        f"/api/llmusage/{record.pk}/",
        {"amount": "0.5", "feature": "agent"},
        format="json",
        **bearer(platform_key),
    )

    assert response.status_code == 200
    assert response.json()["amount"] == "0.50000" and response.json()["feature"] == "agent"
    record.refresh_from_db()
    assert record.amount == Decimal("0.5") and record.accounting_status == "pending"


def test_only_a_platform_admin_corrects_descriptive_fields_of_an_org_record(api, acme_admin_key, make_key):
    record = make_usage(QUERY_RECORD, accounting_status="pending")
    url = f"/api/llmusage/{record.pk}/"

    refused = api.patch(url, {"feature": "agent"}, format="json", **bearer(acme_admin_key))
    record.refresh_from_db()
    assert refused.status_code == 403 and record.feature != "agent"

    response = api.patch(url, {"feature": "agent"}, format="json", **bearer(make_key(org="", role="owner")))

    assert response.status_code == 200 and response.json()["feature"] == "agent"


def test_a_skipped_record_given_an_amount_goes_back_to_pending(api, platform_key):
    record = make_usage(QUERY_RECORD, accounting_status="skipped", amount=Decimal(0), cost=Decimal(0))

    api.patch(f"/api/llmusage/{record.pk}/", {"amount": "1"}, format="json", **bearer(platform_key))

    record.refresh_from_db()
    assert record.accounting_status == "pending"


def test_an_accounted_record_is_immutable(api, platform_key):
    record = make_usage(QUERY_RECORD, accounting_status="accounted")
    moved = make_usage(QUERY_RECORD, accounting_status="skipped")
    move_to_history(moved)

    for target in (record, moved):
        url = f"/api/llmusage/{target.pk}/"
        assert api.patch(url, {"amount": "9"}, format="json", **bearer(platform_key)).status_code == 409
        assert api.delete(url, **bearer(platform_key)).status_code == 409
    record.refresh_from_db()
    assert record.amount == Decimal("0.01")


def test_only_platform_admin_keys_may_change_or_delete_records(api, acme_key, acme_reader_key, make_key):
    """Every org key is refused, its own org's owner and admin too, and another org's key gets the same
    403 before any lookup (it learns nothing of the record); so are a platform key below admin and a
    platform admin key without the ingest scope."""
    record = make_usage(QUERY_RECORD, accounting_status="pending")
    url = f"/api/llmusage/{record.pk}/"
    refused = {
        "acme member": acme_key,
        "acme reader": acme_reader_key,
        "acme owner": make_key(org="acme", role="owner"),
        "acme admin": make_key(org="acme", role="admin"),
        "globex admin": make_key(org="globex", role="admin"),
        "platform member": make_key(org="", role="member"),
        "platform admin, read only": make_key(org="", role="admin", scopes=("read",)),
    }

    for who, key in refused.items():
        assert api.patch(url, {"feature": "x"}, format="json", **bearer(key)).status_code == 403, who
        assert api.delete(url, **bearer(key)).status_code == 403, who
    record.refresh_from_db()
    assert record.feature != "x"


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ({"amount": "-1"}, "amount"),
        ({"status": "meh"}, "status"),
        ({"input_tokens": 5}, "input_tokens"),
        ({"accounting_status": "accounted"}, "accounting_status"),
        ({}, "non_field_errors"),
    ],
)
def test_bad_corrections_are_a_400_naming_the_field(api, platform_key, body, named):
    record = make_usage(QUERY_RECORD, accounting_status="pending")

    response = api.patch(f"/api/llmusage/{record.pk}/", body, format="json", **bearer(platform_key))

    assert response.status_code == 400
    assert named in response.json()


def test_patch_and_delete_of_a_bad_id(api, platform_key):
    assert api.delete("/api/llmusage/nope/", **bearer(platform_key)).status_code == 400
    missing = "01a20000-0000-7000-8000-000000000000"
    assert api.delete(f"/api/llmusage/{missing}/", **bearer(platform_key)).status_code == 404


# --- history -------------------------------------------------------------------------------------


def test_history_is_read_only_and_scoped(
    api, acme_key, globex_key, acme_admin_key, django_assert_max_num_queries
):
    moved = make_usage(QUERY_RECORD)
    make_usage(QUERY_RECORD)  # still hot
    move_to_history(moved)

    with django_assert_max_num_queries(2):
        listed = get(api, "/api/llmusage-history/", acme_key)
    assert ids(listed) == [str(moved.pk)]
    assert listed.json()["results"][0]["backup_time"]
    assert get(api, f"/api/llmusage-history/{moved.pk}/", acme_key).json()["transno"] == moved.transno
    assert get(api, f"/api/llmusage-history/{moved.pk}/", globex_key).status_code == 404
    assert get(api, "/api/llmusage-history/count/", acme_key).json() == {"count": 1, "estimated": False}
    assert get(api, "/api/llmusage-history/count/", globex_key).json()["count"] == 0
    assert get(api, "/api/llmusage-history/", acme_key, status="nope").status_code == 400
    url = f"/api/llmusage-history/{moved.pk}/"
    assert api.delete(url, **bearer(acme_admin_key)).status_code == 405
    assert api.patch(url, {"amount": "1"}, format="json", **bearer(acme_admin_key)).status_code == 405
    assert api.post("/api/llmusage-history/", {}, format="json", **bearer(acme_admin_key)).status_code == 405


# --- auth and schema -----------------------------------------------------------------------------


def test_reads_need_a_key_with_the_read_scope(api, make_key):
    ingest_only = make_key(org="acme", scopes=("ingest",))

    assert api.get("/api/llmusage/").status_code == 401
    assert get(api, "/api/llmusage/stats/", ingest_only).status_code == 403
    assert get(api, "/api/llmusage-history/count/", ingest_only).status_code == 403


def test_schema_describes_every_endpoint_and_parameter(api, platform_key):
    schema = api.get("/api/schema/?format=json", **bearer(platform_key)).json()
    paths = schema["paths"]

    for path in (
        "/api/llmusage/",
        "/api/llmusage/{id}/",
        "/api/llmusage/count/",
        "/api/llmusage/search/",
        "/api/llmusage/stats/",
        "/api/llmusage-history/",
        "/api/llmusage-history/{id}/",
        "/api/llmusage-history/count/",
    ):
        assert path in paths, path
    assert {"get", "patch", "delete"} <= set(paths["/api/llmusage/{id}/"])
    filters = {"start_time", "end_time", "use_date", "userid", "userorgid", "ownerid", "llmid", "model_name"}
    filters |= {"token_name", "group", "feature", "status", "accounting_status", "min_amount", "max_amount"}
    for path, extra in (
        ("/api/llmusage/", {"ordering", "page", "page_size", "cursor"}),
        ("/api/llmusage/count/", set()),
        ("/api/llmusage/stats/", set()),
        ("/api/llmusage/search/", {"keyword", "cursor"}),
        ("/api/llmusage-history/", {"cursor"}),
    ):
        names = {p["name"] for p in paths[path]["get"]["parameters"]}
        assert filters | extra <= names, (path, filters | extra - names)


def test_stats_over_rows_whose_token_sums_pass_64_bits_are_answered(api, platform_key):
    """Rows stored before ingest bounded token counts (written directly): their sum is past 2^63, which
    SQLite's SUM cannot hold (it raised, and the answer was a 503); PostgreSQL adds them as numeric."""
    for _ in range(2):
        make_usage(QUERY_RECORD, input_tokens=2**62, output_tokens=0)

    response = get(api, "/api/llmusage/stats/", platform_key)

    assert response.status_code == 200, response.content[:300]
    body = response.json()
    assert (body["requests"], body["input_tokens"], body["total_tokens"]) == (2, 2**63, 2**63)
