"""`/api/accounts/{org}/statements/` and `/{YYYY-MM}`: who may read, the JSON, the CSV, the errors."""

import csv
import io
from decimal import Decimal

import pytest
from django.contrib.auth.models import Permission

from accounting.accounts import account_create
from accounting.ledger import ledger_topup
from accounting.models import Account
from llmlog.statements import close_period
from tests.conftest import bearer
from tests.llmlog.test_statements import AFTER_NOV, NOV, at, charge

pytestmark = pytest.mark.django_db

FIELDS = {
    "opening_balance",
    "charges",
    "topups",
    "adjustments",
    "closing_balance",
    "currency",
    "period_start",
    "period_end",
    "time_zone",
    "by_model",
    "by_day",
}


@pytest.fixture
def closed(db) -> None:
    """acme and globex, each with November closed: acme topped up 100 and charged 1.25 + 0.75."""
    account_create(org="openai", kind="owner")
    account_create(org="platform", kind="platform")
    for org in ("acme", "globex"):
        account_create(org=org, kind="customer")
        Account.objects.filter(org=org).update(created_at=at(1, 1))
        ledger_topup(org=org, amount=Decimal(100), reference=f"{org}-nov", now=at(11, 2))
    charge(at(11, 10), model_name="gpt-4o", amount="1.25")
    charge(at(11, 11), model_name="claude-3", amount="0.75")
    close_period(month=NOV, now=AFTER_NOV)


def test_an_org_key_lists_its_closed_months(api, acme_reader_key, closed, django_assert_max_num_queries):
    with django_assert_max_num_queries(6):
        response = api.get("/api/accounts/acme/statements/", **bearer(acme_reader_key))

    assert response.status_code == 200
    (item,) = response.json()["results"]
    assert item["month"] == "2026-11"
    assert (item["opening_balance"], item["charges"]) == ("0.00000", "2.00000")
    assert item["closing_balance"] == "98.00000"
    assert item["topups"] == "100.00000"


def test_the_statement_answers_the_snapshot(api, acme_key, closed):
    response = api.get("/api/accounts/acme/statements/2026-11", **bearer(acme_key))

    assert response.status_code == 200
    body = response.json()
    assert body.keys() >= FIELDS
    assert (body["charges"], body["closing_balance"], body["currency"]) == ("2.00000", "98.00000", "USD")
    assert [row["model_name"] for row in body["by_model"]] == ["gpt-4o", "claude-3"]
    assert [row["date"] for row in body["by_day"]] == ["2026-11-10", "2026-11-11"]
    assert api.get("/api/accounts/acme/statements/2026-11/", **bearer(acme_key)).json() == body


@pytest.mark.parametrize("how", ["format", "accept"])
def test_the_statement_as_csv(api, acme_key, closed, how):
    url = "/api/accounts/acme/statements/2026-11"
    if how == "format":
        response = api.get(f"{url}?format=csv", **bearer(acme_key))
    else:
        response = api.get(url, HTTP_ACCEPT="text/csv", **bearer(acme_key))

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    assert 'filename="statement-acme-2026-11.csv"' in response["Content-Disposition"]
    rows = list(csv.reader(io.StringIO(response.content.decode())))
    assert rows[0] == ["section", "key", "requests", "input_tokens", "output_tokens", "amount"]
    figures = {row[1]: row[5] for row in rows if row[0] == "statement"}
    assert (figures["opening_balance"], figures["closing_balance"]) == ("0.00000", "98.00000")
    assert ["by_model", "gpt-4o", "1", "100", "50", "1.25000"] in rows
    assert ["by_day", "2026-11-11", "1", "", "", "0.75000"] in rows


def test_a_month_not_closed_is_a_404_and_a_bad_one_a_400(api, acme_key, closed):
    missing = api.get("/api/accounts/acme/statements/2026-10", **bearer(acme_key))
    bad = api.get("/api/accounts/acme/statements/2026-13?format=csv", **bearer(acme_key))

    assert missing.status_code == 404
    assert bad.status_code == 400
    assert bad["Content-Type"] == "application/json"  # errors stay JSON, as the schema says
    assert "month" in bad.json()


def test_another_orgs_statements_are_a_404(api, acme_key, closed):
    assert api.get("/api/accounts/globex/statements/", **bearer(acme_key)).status_code == 404
    assert api.get("/api/accounts/globex/statements/2026-11", **bearer(acme_key)).status_code == 404


def test_a_platform_key_reads_any_org(api, platform_key, closed):
    response = api.get("/api/accounts/globex/statements/2026-11", **bearer(platform_key))

    assert response.status_code == 200
    assert response.json()["org"] == "globex"
    assert response.json()["charges"] == "0.00000"


def test_a_key_without_the_read_scope_is_refused(api, make_key, closed):
    key = make_key(org="acme", role="admin", scopes=("ingest",))

    assert api.get("/api/accounts/acme/statements/", **bearer(key)).status_code == 403


def test_an_org_without_a_customer_account_is_a_404(api, platform_key, closed):
    assert api.get("/api/accounts/nobody/statements/", **bearer(platform_key)).status_code == 404


def test_a_staff_session_needs_view_statement(api, make_staff, closed):
    staff = make_staff()
    api.force_login(staff)
    refused = api.get("/api/accounts/acme/statements/2026-11")
    staff.user_permissions.add(Permission.objects.get(codename="view_statement"))

    assert refused.status_code == 403
    assert api.get("/api/accounts/acme/statements/2026-11").status_code == 200


@pytest.mark.parametrize("zone", ["Mars/Olympus", "America", "x" * 64, "../etc/passwd", ""])
def test_a_time_zone_that_is_not_one_is_a_400_naming_it(api, platform_key, closed, zone):
    bad = api.patch("/api/accounts/acme/", {"time_zone": zone}, format="json", **bearer(platform_key))

    assert bad.status_code == 400
    assert "time_zone" in bad.json()
    assert Account.objects.get(org="acme", kind="customer").time_zone == "UTC"


def test_a_platform_admin_sets_an_orgs_time_zone(api, platform_key, closed):
    url = "/api/accounts/acme/"
    good = api.patch(url, {"time_zone": "Europe/Paris"}, format="json", **bearer(platform_key))

    assert good.status_code == 200
    assert good.json()["time_zone"] == "Europe/Paris"
    assert Account.objects.get(org="acme", kind="customer").time_zone == "Europe/Paris"


def test_options_asked_as_csv_answers_json(api, platform_key, closed):
    response = api.options("/api/accounts/acme/statements/2026-11?format=csv", **bearer(platform_key))

    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"


def test_an_account_is_created_with_the_time_zone_of_its_statements(api, platform_key, closed):
    body = {"org": "initech", "kind": "customer", "time_zone": "Asia/Tokyo"}
    created = api.post("/api/accounts/", body, format="json", **bearer(platform_key))
    refused = api.post(
        "/api/accounts/",
        {**body, "org": "hooli", "time_zone": "Mars/Olympus"},
        format="json",
        **bearer(platform_key),
    )

    assert created.status_code == 201 and created.json()["time_zone"] == "Asia/Tokyo"
    assert Account.objects.get(org="initech").time_zone == "Asia/Tokyo"
    assert refused.status_code == 400 and "time_zone" in refused.json()
    assert not Account.objects.filter(org="hooli").exists()
