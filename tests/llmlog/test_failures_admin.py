"""The failed-accounting page (llmage's failed_accounting.ui): filters, search by transno, retry now,
resolve and ignore with a message that counts what succeeded and failed, CSV export, the dashboard's
tile that links to it, permissions, and no unbounded COUNT on llmusage_accounting_failed."""

import csv
import io
import re
from datetime import date, datetime, timedelta
from decimal import Decimal

import pytest
from django.contrib import admin
from django.contrib.auth.models import User
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from accounting.accounts import account_update
from accounting.admin.failures import AccountingFailureAdmin
from accounting.failures import failure_resolve
from accounting.ledger import ledger_topup
from accounting.models import Account, AccountingFailure
from core.admin import BoundedCountPaginator
from llmlog.admin.failures import AccountingFailureRetryAdmin
from llmlog.models import LLMUsage
from llmlog.posting import account_pending_usage
from tests.factories import insert_usage, make_accounts, make_failure, usage_row

pytestmark = pytest.mark.django_db

FAILURES = reverse("admin:accounting_accountingfailure_changelist")
EXPORT = reverse("admin:accounting_accountingfailure_export_csv")
TABLE = "llmusage_accounting_failed"


def listed(client: Client, params: dict | None = None) -> set[str]:
    response = client.get(FAILURES, params or {})
    assert response.status_code == 200
    return {row.transno for row in response.context["cl"].result_list}


def act(client: Client, action: str, failures: list[AccountingFailure]) -> list[str]:
    """Run an action on the failures; the messages it left."""
    response = client.post(
        FAILURES, {"action": action, "_selected_action": [f.pk for f in failures]}, follow=True
    )
    assert response.status_code == 200
    return [str(message) for message in response.context["messages"]]


@pytest.fixture
def operator(db) -> Client:
    client = Client()
    client.force_login(User.objects.create_superuser("ops", "ops@example.com", "pw"))
    return client


@pytest.fixture
def postings(db) -> dict[str, AccountingFailure]:
    """Real postings that failed: acme can pay for one record of three (a-1 posted; a-2, a-3 failed on
    insufficient_balance), globex has no account (g-1: no_account)."""
    make_accounts(funds=Decimal("0.01"))
    insert_usage(
        [
            usage_row(transno="a-1"),
            usage_row(transno="a-2"),
            usage_row(transno="a-3"),
            usage_row(transno="g-1", userorgid="globex"),
        ]
    )
    account_pending_usage()
    return {f.transno: f for f in AccountingFailure.objects.all()}


# --- one failures admin ---------------------------------------------------------------------------


def test_the_failures_page_is_registered_once_with_retry_now() -> None:
    registered = admin.site._registry[AccountingFailure]
    assert type(registered) is AccountingFailureRetryAdmin
    assert isinstance(registered, AccountingFailureAdmin)
    assert registered.actions[0] == "retry_now"
    assert isinstance(registered.paginator(AccountingFailure.objects.all(), 50), BoundedCountPaginator)


# --- list and search ------------------------------------------------------------------------------


def test_the_list_shows_attempts_the_short_last_error_and_money(operator) -> None:
    long_error = "Org 'acme' has insufficient balance: " + "x" * 200
    row = make_failure(transno="req-long", error_code="insufficient_balance", error_message=long_error)
    make_failure(
        usage_id=row.usage_id, transno="req-long", error_code="insufficient_balance", error_message=long_error
    )

    html = operator.get(FAILURES).content.decode()

    cells = dict(re.findall(r'<td class="field-(\w+)[^"]*">(.*?)</td>', html, re.S))
    assert cells["attempts"] == "2"
    assert cells["amount_display"] == '<span class="money">0.00600</span>'  # cost: on the row's page
    assert cells["error_code"] == "Insufficient Balance"
    shown = re.sub(r"<[^>]+>", "", cells["last_error"])
    assert shown.startswith("Org &#x27;acme&#x27; has insufficient balance") and len(shown) < 120
    escaped = long_error.replace("'", "&#x27;")
    assert f'title="{escaped}"' in cells["last_error"]  # the full text on hover
    assert "req-long" in html


def test_search_finds_a_transno_exactly_or_a_usage_id(operator) -> None:
    target = make_failure(transno="req-42")
    make_failure(transno="req-43")

    assert listed(operator, {"q": "req-42"}) == {"req-42"}
    assert listed(operator, {"q": f"  {target.usage_id} "}) == {"req-42"}
    # Exact and case-sensitive (the transno index answers it): no prefix, no other case.
    assert listed(operator, {"q": "req-4"}) == set()
    assert listed(operator, {"q": "REQ-42"}) == set()
    # Not text: Django's search form refuses it with a message, not an error.
    refused = operator.get(FAILURES, {"q": "req-42\x00"})
    assert refused.status_code == 200
    assert [str(message) for message in refused.context["messages"]] == ["Null characters are not allowed."]


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"use_date__range__gte": "2026-11-19", "use_date__range__lte": "2026-11-20"}, {"base", "resolved"}),
        ({"use_date__range__gte": "2026-11-21"}, {"next-day", "globex", "other-user", "claude"}),
        ({"status__exact": "resolved"}, {"resolved"}),
        ({"error_code__exact": "no_price"}, {"claude"}),
        ({"userorgid": "globex"}, {"globex"}),
        ({"userid": "u-7"}, {"other-user"}),
        ({"userid": ""}, {"base", "resolved", "next-day", "globex", "other-user", "claude"}),
        ({"model_name": "claude-sonnet-4"}, {"claude"}),
        (
            {"userorgid": "acme", "status__exact": "open", "use_date__range__gte": "2026-11-20"},
            {"base", "next-day", "other-user", "claude"},
        ),
        ({"userorgid": "acme", "q": "next-day"}, {"next-day"}),
    ],
)
def test_each_filter(operator, params, expected) -> None:
    make_failure(transno="base")
    failure_resolve(failure=make_failure(transno="resolved"), by="ops")
    make_failure(transno="next-day", use_date=date(2026, 11, 21))
    make_failure(transno="globex", userorgid="globex", use_date=date(2026, 11, 21))
    make_failure(transno="other-user", userid="u-7", use_date=date(2026, 11, 21))
    make_failure(
        transno="claude", model_name="claude-sonnet-4", error_code="no_price", use_date=date(2026, 11, 22)
    )

    assert listed(operator, params) == expected


def test_the_filters_are_on_the_page(operator) -> None:
    make_failure(userorgid="acme")
    make_failure(userorgid="globex")

    html = operator.get(FAILURES, {"userid": "u-1", "q": "x"}).content.decode()

    assert 'name="use_date__range__gte"' in html and 'name="use_date__range__lte"' in html
    org_select = re.search(
        r'<select class="llmlog-select-filter" data-filter="userorgid"(.*?)</select>', html, re.S
    )
    assert re.findall(r">([^<]+)</option>", org_select.group(1)) == ["All", "acme", "globex"]
    user_box = re.search(
        r'<form method="get" class="llmlog-exact-filter" data-filter="userid"[^>]*>(.*?)</form>', html, re.S
    )
    assert 'name="userid" value="u-1"' in user_box.group(1)
    assert '<input type="hidden" name="q" value="x">' in user_box.group(1)  # the search rides along
    assert 'class="llmlog-exact-filter" data-filter="model_name"' in html
    for code in AccountingFailure.ErrorCode.values:
        assert f"error_code__exact={code}" in html
    for status in AccountingFailure.Status.values:
        assert f"status__exact={status}" in html


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"userorgid": "acme", "status__exact": "open"},
        {"use_date__range__gte": "2026-01-01", "use_date__range__lte": "2030-01-01"},
        {"userid": "u-1", "model_name": "gpt-4o", "error_code__exact": "no_account"},
        {"q": "req-1"},
        {"_facets": "1"},  # facet counts would COUNT per filter choice: they are off
        {"p": "2"},
    ],
)
def test_the_page_never_counts_or_scans_the_whole_table(
    operator, django_assert_max_num_queries, params
) -> None:
    for n in range(60):
        make_failure(transno=f"req-{n}")
    with CaptureQueriesContext(connection) as captured, django_assert_max_num_queries(12):
        response = operator.get(FAILURES, params)
    assert response.status_code == 200
    on_table = [q["sql"] for q in captured.captured_queries if f'"{TABLE}"' in q["sql"]]
    assert on_table
    unbounded = [
        sql
        for sql in on_table
        if ("COUNT(" in sql.upper() and "LIMIT" not in sql.upper()) or "DISTINCT" in sql.upper()
    ]
    assert unbounded == []
    assert any("COUNT(" in sql.upper() and "LIMIT" in sql.upper() for sql in on_table)


def test_a_list_longer_than_the_bound_says_more_than(operator, monkeypatch) -> None:
    monkeypatch.setattr(BoundedCountPaginator, "bound", 5)
    for _ in range(8):
        make_failure()
    response = operator.get(FAILURES)
    assert response.context["cl"].paginator.is_estimate
    assert "more than 5 accounting failures" in response.content.decode()


def test_a_bad_filter_value_is_not_a_server_error(operator) -> None:
    make_failure()
    response = operator.get(FAILURES, {"use_date__range__gte": "yesterday-ish", "attempts__gt": "many"})
    assert response.status_code in (200, 302)
    make_failure(userid="u-2")
    assert len(listed(operator, {"userid": "u-1\x00"})) == 2  # not text: no filter, not an error
    assert operator.get(EXPORT, {"attempts__gt": "many"}).status_code == 400


# --- actions --------------------------------------------------------------------------------------


def test_retry_now_posts_what_can_post_and_says_why_the_rest_failed(operator, postings) -> None:
    ledger_topup(org="acme", amount=Decimal("0.006"))  # enough for one of a-2, a-3

    shown = act(operator, "retry_now", [postings["a-2"], postings["a-3"], postings["g-1"]])

    assert shown == ["Retried 3 failure(s): 1 succeeded, 2 failed (1 insufficient_balance, 1 no_account)."]
    statuses = dict(LLMUsage.objects.values_list("transno", "accounting_status"))
    assert statuses == {"a-1": "accounted", "a-2": "accounted", "a-3": "failed", "g-1": "failed"}
    a2, a3 = AccountingFailure.objects.get(transno="a-2"), AccountingFailure.objects.get(transno="a-3")
    assert (a2.status, a2.resolved_by) == ("resolved", "ops") and a2.resolved_at is not None
    assert (a3.status, a3.attempts) == ("open", 2)


def test_retry_now_when_everything_posts(operator, postings) -> None:
    ledger_topup(org="acme", amount=Decimal(1))

    shown = act(operator, "retry_now", [postings["a-2"], postings["a-3"]])

    assert shown == ["Retried 2 failure(s): 2 succeeded, 0 failed."]
    assert set(
        LLMUsage.objects.filter(transno__in=["a-2", "a-3"]).values_list("accounting_status", flat=True)
    ) == {"accounted"}


def test_retry_now_counts_a_gone_record_and_a_busy_one(operator, postings) -> None:
    gone = make_failure(transno="gone")  # no usage record with that id
    LLMUsage.objects.filter(transno="g-1").update(accounting_status="pending")  # a worker will post it

    shown = act(operator, "retry_now", [gone, postings["g-1"]])

    assert shown == [
        "Retried 2 failure(s): 0 succeeded, 2 failed "
        "(1 busy (being posted, or pending again), 1 usage record gone)."
    ]


def test_resolve_and_ignore_record_who_and_when_and_count_what_failed(operator, postings) -> None:
    a2, a3, g1 = postings["a-2"], postings["a-3"], postings["g-1"]

    resolved = act(operator, "resolve", [a2])
    ignored = act(operator, "ignore", [a2, a3, g1])
    again = act(operator, "resolve", [a2, a3])

    assert resolved == ["Resolved 1 failure(s); 0 failed."]
    assert ignored == ["Ignored 2 failure(s); 1 failed (1 already resolved)."]
    assert again == ["Resolved 1 failure(s); 1 failed (1 already resolved)."]
    for row in (a2, a3, g1):
        row.refresh_from_db()
    assert (a2.status, a2.resolved_by) == ("resolved", "ops")
    assert (a3.status, a3.resolved_by) == ("resolved", "ops")
    assert (g1.status, g1.resolved_by) == ("ignored", "ops")
    assert all(row.resolved_at is not None for row in (a2, a3, g1))


def test_an_action_over_too_many_rows_does_nothing_and_says_so(operator, postings, monkeypatch) -> None:
    monkeypatch.setattr("core.admin.MAX_ACTION_ROWS", 1)

    shown = act(operator, "resolve", [postings["a-2"], postings["g-1"]])

    assert shown == ["Nothing done: select at most 1 rows at once (narrow the filters)."]
    assert set(AccountingFailure.objects.values_list("status", flat=True)) == {"open"}


def test_a_failure_is_read_only_and_links_to_its_usage_record(operator, postings) -> None:
    row = postings["g-1"]
    change = reverse("admin:accounting_accountingfailure_change", args=[row.pk])

    page = operator.get(change)

    html = page.content.decode()
    assert page.status_code == 200
    assert 'name="error_code"' not in html
    assert reverse("admin:llmlog_llmusage_change", args=[row.usage_id]) in html and "(failed)" in html
    assert operator.get(reverse("admin:accounting_accountingfailure_add")).status_code == 403
    assert (
        operator.post(reverse("admin:accounting_accountingfailure_delete", args=[row.pk])).status_code == 403
    )
    LLMUsage.objects.filter(pk=row.usage_id).delete()
    assert "not in llmusage" in operator.get(change).content.decode()


# --- CSV ------------------------------------------------------------------------------------------


def test_export_csv_of_the_filtered_list_with_totals_in_the_operators_time_zone(operator, settings) -> None:
    settings.TIME_ZONE = "Asia/Tokyo"
    when = datetime(2026, 11, 20, 20, 0, tzinfo=timezone.get_fixed_timezone(0))
    make_failure(transno="acme-1", now=when)
    make_failure(
        transno="acme-2", amount=Decimal("1.5"), cost=Decimal("1"), error_message="=HYPERLINK(1)", now=when
    )
    make_failure(transno="globex-1", userorgid="globex", now=when)

    response = operator.get(EXPORT, {"userorgid": "acme"})

    assert response.status_code == 200 and response["Content-Type"].startswith("text/csv")
    text = b"".join(response.streaming_content).decode("utf-8-sig")
    *rows, totals = list(csv.DictReader(io.StringIO(text)))
    assert sorted(row["transno"] for row in rows) == ["acme-1", "acme-2"]
    assert totals["last_failed_at"] == "TOTAL (2 rows)"
    assert Decimal(totals["amount"]) == Decimal("1.50600") and Decimal(totals["cost"]) == Decimal("1.00480")
    assert rows[0]["last_failed_at"] == "2026-11-21 05:00:00+09:00"
    assert next(row for row in rows if row["transno"] == "acme-2")["error_message"] == "'=HYPERLINK(1)"


def test_export_selected_rows_to_csv(operator) -> None:
    chosen, _ = make_failure(transno="chosen"), make_failure(transno="not-chosen")
    response = operator.post(FAILURES, {"action": "export_csv", "_selected_action": [chosen.pk]})
    text = b"".join(response.streaming_content).decode("utf-8-sig")
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [row["transno"] for row in rows] == ["chosen", ""]
    assert rows[-1]["last_failed_at"] == "TOTAL (1 row)"


# --- the dashboard's tile -------------------------------------------------------------------------


@pytest.mark.parametrize("org", ["", "acme"])
def test_the_dashboards_open_failures_tile_links_to_the_same_failures(operator, org) -> None:
    make_failure(transno="acme-open")
    make_failure(transno="acme-open-2", use_date=date(2026, 11, 1))
    failure_resolve(failure=make_failure(transno="acme-resolved"), by="ops")
    make_failure(transno="globex-open", userorgid="globex")

    dashboard = operator.get(reverse("admin-dashboard"), {"org": org} if org else {})
    url = dashboard.context["failures_url"]
    listed_there = operator.get(url).context["cl"].result_list

    assert len(listed_there) == dashboard.context["open_failures"] == (2 if org else 3)
    assert {row.status for row in listed_there} == {"open"}
    if org:
        assert {row.userorgid for row in listed_there} == {"acme"}
    assert f'href="{url.replace("&", "&amp;")}"' in dashboard.content.decode()


# --- permissions ----------------------------------------------------------------------------------


def test_staff_without_rights_do_not_see_the_failures(staff_session) -> None:
    make_failure()
    client = staff_session("llmlog.view_llmusage")
    index = client.get(reverse("admin:index"))
    models = {model["object_name"] for app in index.context["app_list"] for model in app["models"]}
    assert "AccountingFailure" not in models
    assert client.get(FAILURES).status_code == 403
    assert client.get(EXPORT).status_code == 403


def test_staff_who_may_only_view_failures_cannot_act_on_them(staff_session, postings) -> None:
    client = staff_session("accounting.view_accountingfailure")
    page = client.get(FAILURES)
    assert page.status_code == 200
    actions = [name for name, _ in page.context["action_form"].fields["action"].choices if name]
    assert actions == ["export_csv"]
    assert client.get(EXPORT).status_code == 200

    for action in ("retry_now", "resolve", "ignore"):
        client.post(FAILURES, {"action": action, "_selected_action": [postings["g-1"].pk]})
    assert AccountingFailure.objects.get(transno="g-1").status == "open"
    assert AccountingFailure.objects.get(transno="g-1").attempts == 1


def test_staff_with_change_rights_act_on_failures(staff_session, postings) -> None:
    client = staff_session("accounting.view_accountingfailure", "accounting.change_accountingfailure")
    shown = [
        str(m)
        for m in client.post(
            FAILURES, {"action": "ignore", "_selected_action": [postings["g-1"].pk]}, follow=True
        ).context["messages"]
    ]
    assert shown == ["Ignored 1 failure(s); 0 failed."]
    assert AccountingFailure.objects.get(transno="g-1").status == "ignored"


def test_a_frozen_account_shows_as_account_frozen_and_retries_after_unfreezing(operator, postings) -> None:
    account = Account.objects.get(org="acme", kind="customer")
    ledger_topup(org="acme", amount=Decimal(1))
    account_update(account=account, status="frozen")
    act(operator, "retry_now", [postings["a-2"]])
    assert AccountingFailure.objects.get(transno="a-2").error_code == "account_frozen"
    assert listed(operator, {"error_code__exact": "account_frozen"}) == {"a-2"}

    account_update(account=account, status="active")
    assert act(operator, "retry_now", [postings["a-2"]]) == ["Retried 1 failure(s): 1 succeeded, 0 failed."]
    assert listed(operator, {"status__exact": "resolved"}) == {"a-2"}


def test_use_date_filter_is_by_day(operator) -> None:
    today = timezone.localdate()
    make_failure(transno="today", use_date=today)
    make_failure(transno="yesterday", use_date=today - timedelta(days=1))
    day = today.isoformat()
    assert listed(operator, {"use_date__range__gte": day, "use_date__range__lte": day}) == {"today"}
