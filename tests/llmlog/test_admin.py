"""The operator's admin: every list opens and searches, filters use the indexes, big lists never COUNT
the table, accounted and history records are read-only, staff see only what they may."""

import re
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import formats, timezone

from core.admin import BoundedCountPaginator, distinct_values
from llmlog.models import ApiKey, JobRun, LLMUsage, LLMUsageHistory, ModelPrice
from tests.factories import make_usage

pytestmark = pytest.mark.django_db

USAGE_LIST = reverse("admin:llmlog_llmusage_changelist")
HISTORY_LIST = reverse("admin:llmlog_llmusagehistory_changelist")


def changelist(model: str) -> str:
    return reverse(f"admin:llmlog_{model}_changelist")


def unbounded_scans(queries: list[dict], table: str) -> list[str]:
    """Queries on `table` that would read all of it: a COUNT without LIMIT, or a DISTINCT."""
    found = []
    for query in queries:
        sql = query["sql"]
        if f'"{table}"' not in sql:
            continue
        upper = sql.upper()
        if ("COUNT(" in upper and "LIMIT" not in upper) or "DISTINCT" in upper:
            found.append(sql)
    return found


# --- every ModelAdmin: a changelist and a search ------------------------------------------------


@pytest.fixture
def one_of_each(db) -> dict[str, str]:
    """One row per admin list, and the search term that finds it."""
    make_usage(transno="hot-1")
    make_usage(model=LLMUsageHistory, transno="old-1")
    ModelPrice.objects.create(model_name="gpt-4o", input_price=Decimal("2.5"), output_price=Decimal(10))
    ApiKey.objects.create(name="acme gateway", userorgid="acme", key_hash="h" * 64, key_prefix="llk_abc")
    JobRun.objects.create(job="backup_accounted_llmusage")
    return {
        "llmusage": "hot-1",
        "llmusagehistory": "old-1",
        "modelprice": "gpt-4o",
        "apikey": "acme",
        "jobrun": "backup_accounted_llmusage",
    }


@pytest.mark.parametrize("model", ["llmusage", "llmusagehistory", "modelprice", "apikey", "jobrun"])
def test_changelist_opens_and_search_finds_the_row(admin_client, one_of_each, model) -> None:
    response = admin_client.get(changelist(model))
    assert response.status_code == 200
    assert len(response.context["cl"].result_list) == 1

    found = admin_client.get(changelist(model), {"q": one_of_each[model]})
    assert found.status_code == 200
    assert len(found.context["cl"].result_list) == 1

    missed = admin_client.get(changelist(model), {"q": "nothing-like-this"})
    assert len(missed.context["cl"].result_list) == 0


@pytest.mark.parametrize("url", [USAGE_LIST, HISTORY_LIST])
def test_usage_search_matches_each_indexed_column_exactly(admin_client, url) -> None:
    model = LLMUsage if url == USAGE_LIST else LLMUsageHistory
    target = make_usage(
        model=model, transno="req-42", userid="u-7", username="Grace", userorgid="globex", token_name="ci key"
    )
    make_usage(model=model, transno="req-43", model_name="claude-sonnet-4")
    for term in ("req-42", "u-7", "Grace", "globex", "ci key", str(target.pk)):
        rows = admin_client.get(url, {"q": term}).context["cl"].result_list
        assert [row.pk for row in rows] == [target.pk], term
    # Exact, case-sensitive: a prefix or another case does not match (no UPPER() or LIKE scans).
    for term in ("req-4", "REQ-42", "glob"):
        assert list(admin_client.get(url, {"q": term}).context["cl"].result_list) == [], term


def test_usage_search_finds_words_of_the_error_message(admin_client) -> None:
    failed = make_usage(status="failed", code=429, error_message="Rate limit reached for requests")
    make_usage()
    rows = admin_client.get(USAGE_LIST, {"q": "rate limit"}).context["cl"].result_list
    assert [row.pk for row in rows] == [failed.pk]


# --- filters -------------------------------------------------------------------------------------


def test_date_range_filter_keeps_the_days_in_the_operators_time_zone(admin_client, settings) -> None:
    settings.TIME_ZONE = "Asia/Tokyo"
    tokyo = timezone.get_fixed_timezone(9 * 60)
    inside = [
        make_usage(use_time=datetime(2026, 11, 10, 0, 0, tzinfo=tokyo)),  # first moment of the 10th
        make_usage(use_time=datetime(2026, 11, 11, 23, 59, tzinfo=tokyo)),
    ]
    make_usage(use_time=datetime(2026, 11, 9, 23, 59, tzinfo=tokyo))  # the 9th in Tokyo
    make_usage(use_time=datetime(2026, 11, 12, 0, 0, tzinfo=tokyo))

    response = admin_client.get(
        USAGE_LIST, {"use_time__range__gte": "2026-11-10", "use_time__range__lte": "2026-11-11"}
    )
    assert response.status_code == 200
    assert {row.pk for row in response.context["cl"].result_list} == {row.pk for row in inside}
    # The picker is on the page: both ends, with Django's own calendar widget.
    html = response.content.decode()
    assert 'name="use_time__range__gte"' in html and 'name="use_time__range__lte"' in html


@pytest.mark.parametrize(
    "params, expected",
    [
        ({"status__exact": "failed"}, {"failed-call"}),
        ({"accounting_status__exact": "accounted"}, {"accounted-call"}),
        ({"model_name": "claude-sonnet-4"}, {"claude-call"}),
        ({"userorgid": "globex"}, {"globex-call"}),
        ({"userorgid": "acme", "model_name": "gpt-4o", "status__exact": "success"}, {"accounted-call"}),
    ],
)
def test_list_filters(admin_client, params, expected) -> None:
    make_usage(transno="failed-call", status="failed", code=500, model_name="o3-mini")
    make_usage(transno="accounted-call", accounting_status="accounted")
    make_usage(transno="claude-call", model_name="claude-sonnet-4")
    make_usage(transno="globex-call", userorgid="globex", model_name="o3-mini")
    rows = admin_client.get(USAGE_LIST, params).context["cl"].result_list
    assert {row.transno for row in rows} == expected


def test_org_and_model_filters_list_every_value_as_a_select(admin_client) -> None:
    make_usage(userorgid="acme", model_name="gpt-4o")
    make_usage(userorgid="globex", model_name="claude-sonnet-4")
    make_usage(userorgid="initech", model_name="gpt-4o")
    html = admin_client.get(USAGE_LIST).content.decode()
    selects = re.findall(
        r'<select class="llmlog-select-filter" data-filter="([^"]+)"(.*?)</select>', html, re.S
    )
    options = {title: re.findall(r">([^<]+)</option>", body) for title, body in selects}
    assert options["userorgid"] == ["All", "acme", "globex", "initech"]
    assert options["model name"] == ["All", "claude-sonnet-4", "gpt-4o"]


def test_distinct_values_reads_each_value_once_in_order_up_to_the_limit() -> None:
    for org in ("m", "a", "z", "a", "", "m"):
        make_usage(userorgid=org)
    assert distinct_values(model=LLMUsage, column="userorgid") == ["", "a", "m", "z"]
    assert distinct_values(model=LLMUsage, column="userorgid", limit=2) == ["", "a"]
    assert distinct_values(model=LLMUsageHistory, column="userorgid") == []


# --- big tables: no unbounded COUNT --------------------------------------------------------------


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"userorgid": "acme", "status__exact": "success"},
        {"use_time__range__gte": "2026-01-01", "use_time__range__lte": "2030-01-01"},
        {"q": "t-000001"},
        {"_facets": "1"},  # facet counts would COUNT per filter choice: they are off
        {"p": "2"},
    ],
)
@pytest.mark.parametrize("url, table", [(USAGE_LIST, "llmusage"), (HISTORY_LIST, "llmusage_history")])
def test_usage_lists_never_count_or_scan_the_whole_table(
    admin_client, django_assert_max_num_queries, url, table, params
) -> None:
    model = LLMUsage if table == "llmusage" else LLMUsageHistory
    for _ in range(59):
        make_usage(model=model)
    make_usage(
        model=model, transno="t-000001"
    )  # what the search finds (a search finding nothing reads nothing)
    with CaptureQueriesContext(connection) as captured, django_assert_max_num_queries(10):
        response = admin_client.get(url, params)
    assert response.status_code == 200
    assert unbounded_scans(captured.captured_queries, table) == []
    # The page count is COUNT(*) over a LIMIT: it reads at most bound + 1 rows.
    assert any(
        "COUNT(" in q["sql"].upper() and "LIMIT" in q["sql"].upper() for q in captured.captured_queries
    )


def test_a_list_longer_than_the_bound_says_more_than(admin_client, monkeypatch) -> None:
    monkeypatch.setattr(BoundedCountPaginator, "bound", 5)
    for _ in range(8):
        make_usage()
    response = admin_client.get(USAGE_LIST)
    assert response.context["cl"].paginator.is_estimate
    assert "more than 5 LLM usage" in response.content.decode()


# --- read-only where the ledger says so ----------------------------------------------------------


def test_a_pending_record_is_corrected_through_the_edit_service(admin_client) -> None:
    record = make_usage(model_name="gpt-4o", amount=Decimal("0.01000"))
    url = reverse("admin:llmlog_llmusage_change", args=[record.pk])
    page = admin_client.get(url)
    assert page.status_code == 200
    form = page.context["adminform"].form
    data = {name: form.initial.get(name) or "" for name in form.fields}
    data.update(model_name="gpt-4o-mini", amount="0.02000", code="200", status="success")
    response = admin_client.post(url, data)
    assert response.status_code == 302, response.context["adminform"].form.errors if response.context else ""
    record.refresh_from_db()
    assert (record.model_name, record.amount) == ("gpt-4o-mini", Decimal("0.02000"))
    # Token counts are what the provider reported: not a form field.
    assert "input_tokens" not in form.fields


def test_an_accounted_record_is_read_only(admin_client) -> None:
    record = make_usage(accounting_status="accounted", model_name="gpt-4o")
    change = reverse("admin:llmlog_llmusage_change", args=[record.pk])
    page = admin_client.get(change)
    assert page.status_code == 200
    assert not page.context["has_change_permission"]
    assert 'name="_save"' not in page.content.decode()
    admin_client.post(change, {"model_name": "tampered"})
    record.refresh_from_db()
    assert record.model_name == "gpt-4o"
    assert admin_client.get(reverse("admin:llmlog_llmusage_delete", args=[record.pk])).status_code == 403
    assert LLMUsage.objects.filter(pk=record.pk).exists()


def test_a_pending_record_can_be_deleted_but_not_in_bulk(admin_client) -> None:
    record = make_usage()
    delete = reverse("admin:llmlog_llmusage_delete", args=[record.pk])
    assert admin_client.post(delete, {"post": "yes"}).status_code == 302
    assert not LLMUsage.objects.filter(pk=record.pk).exists()
    actions = admin_client.get(USAGE_LIST).context["action_form"].fields["action"].choices
    assert "delete_selected" not in [name for name, _ in actions]


def test_history_and_usage_cannot_be_added_and_history_not_changed(admin_client) -> None:
    record = make_usage(model=LLMUsageHistory)
    assert admin_client.get(reverse("admin:llmlog_llmusage_add")).status_code == 403
    assert admin_client.get(reverse("admin:llmlog_llmusagehistory_add")).status_code == 403
    page = admin_client.get(reverse("admin:llmlog_llmusagehistory_change", args=[record.pk]))
    assert page.status_code == 200 and not page.context["has_change_permission"]
    delete = reverse("admin:llmlog_llmusagehistory_delete", args=[record.pk])
    assert admin_client.post(delete, {"post": "yes"}).status_code == 403
    assert LLMUsageHistory.objects.filter(pk=record.pk).exists()


# --- API keys ------------------------------------------------------------------------------------


def test_a_key_made_in_the_admin_is_shown_once_and_stored_hashed(admin_client) -> None:
    response = admin_client.post(
        reverse("admin:llmlog_apikey_add"),
        {"name": "acme gateway", "userorgid": "acme", "role": "member", "scopes": ["ingest", "read"]},
        follow=True,
    )
    raw = re.search(r'id="new-api-key"[^>]*value="(llk_[^"]+)"', response.content.decode()).group(1)
    key = ApiKey.objects.get(name="acme gateway")
    assert key.key_hash != raw and key.key_prefix == raw[:12]
    assert raw not in admin_client.get(reverse("admin:llmlog_apikey_change", args=[key.pk])).content.decode()


def test_revoke_action(admin_client) -> None:
    key = ApiKey.objects.create(name="old", userorgid="acme", key_hash="k" * 64, key_prefix="llk_old")
    response = admin_client.post(
        changelist("apikey"), {"action": "revoke", "_selected_action": [key.pk]}, follow=True
    )
    assert response.status_code == 200
    key.refresh_from_db()
    assert key.revoked_at is not None


# --- staff permissions ---------------------------------------------------------------------------


def test_staff_without_rights_on_a_model_does_not_see_it(staff_session) -> None:
    client = staff_session("llmlog.view_modelprice")
    index = client.get(reverse("admin:index"))
    models = {model["object_name"] for app in index.context["app_list"] for model in app["models"]}
    assert models == {"ModelPrice"}
    assert client.get(USAGE_LIST).status_code == 403
    assert client.get(HISTORY_LIST).status_code == 403
    assert client.get(reverse("admin:llmlog_llmusage_export_csv")).status_code == 403
    assert client.get(reverse("admin-dashboard")).status_code == 403
    assert "Dashboard" not in index.content.decode()


def test_staff_with_view_rights_reads_usage_but_changes_nothing(staff_session) -> None:
    record = make_usage()
    client = staff_session("llmlog.view_llmusage")
    assert client.get(USAGE_LIST).status_code == 200
    page = client.get(reverse("admin:llmlog_llmusage_change", args=[record.pk]))
    assert page.status_code == 200 and not page.context["has_change_permission"]
    client.post(reverse("admin:llmlog_llmusage_change", args=[record.pk]), {"model_name": "x"})
    record.refresh_from_db()
    assert record.model_name == "gpt-4o"
    assert client.get(reverse("admin-dashboard")).status_code == 200
    assert "Dashboard" in client.get(reverse("admin:index")).content.decode()


def test_the_dashboard_hides_failures_from_staff_who_may_not_see_them(staff_session) -> None:
    without = staff_session("llmlog.view_llmusage")
    assert without.get(reverse("admin-dashboard")).context["open_failures"] is None
    with_failures = staff_session("llmlog.view_llmusage", "accounting.view_accountingfailure")
    assert with_failures.get(reverse("admin-dashboard")).context["open_failures"] == 0


def test_times_show_in_the_operators_time_zone(admin_client, settings) -> None:
    settings.TIME_ZONE = "Asia/Tokyo"
    record = make_usage(use_time=datetime(2026, 11, 10, 20, 0, tzinfo=UTC))  # the 11th, 5 a.m. in Tokyo
    page = admin_client.get(reverse("admin:llmlog_llmusage_change", args=[record.pk])).content.decode()
    tokyo = timezone.localtime(record.use_time, timezone.get_current_timezone())
    assert tokyo.day == 11
    assert formats.date_format(tokyo, "DATETIME_FORMAT") in page


def test_usage_list_shows_one_time_and_one_money_format(admin_client) -> None:
    make_usage(
        transno="fmt-1",
        use_time=datetime(2026, 12, 2, 17, 23, 3, tzinfo=UTC),
        amount=Decimal("12345.6"),
        cost=Decimal("0.00480"),
        input_tokens=1_000_000,
        output_tokens=234_567,
    )

    html = admin_client.get(changelist("llmusage")).content.decode()

    cells = dict(re.findall(r'<t[dh] class="field-(\w+)[^"]*">(.*?)</t[dh]>', html, re.S))
    assert re.sub(r"<[^>]+>", "", cells["when"]) == "2026-12-02 17:23:03 UTC"
    assert cells["amount_display"] == '<span class="money">12,345.60000</span>'
    assert cells["cost_display"] == '<span class="money">0.00480</span>'
    assert cells["tokens"] == '<span class="num">1,234,567</span>'
    assert "<title>" in html and "llmlog" in html.split("<title>")[1].split("</title>")[0]


def test_every_admin_date_reads_24h_with_the_zone(admin_client) -> None:
    """Django's own rendering (change pages, job runs, keys) follows config/formats: not "Dec. 2, 2026"."""
    assert formats.date_format(datetime(2026, 12, 2, 17, 23, 3, tzinfo=UTC), "DATETIME_FORMAT") == (
        "2026-12-02 17:23:03 UTC"
    )
    record = make_usage(transno="fmt-2", use_time=datetime(2026, 12, 2, 17, 23, 3, tzinfo=UTC))
    page = admin_client.get(reverse("admin:llmlog_llmusage_change", args=[record.pk])).content.decode()
    assert "2026-12-02 17:23:03 UTC" in page and "p.m." not in page
