"""Statements in the admin: the read-only list, its search, the print-ready page, the account's link."""

import re

import pytest
from django.contrib.auth.models import Permission, User
from django.test import Client

from accounting.models import Account, Statement
from llmlog.statements import close_period
from tests.llmlog.test_statements import AFTER_NOV, NOV, acme, november  # noqa: F401 - acme: a fixture

pytestmark = pytest.mark.django_db


@pytest.fixture
def operator(client: Client) -> Client:
    client.force_login(User.objects.create_superuser("ops", "ops@example.com", "pw"))
    return client


@pytest.fixture
def statement(acme: Account) -> Statement:  # noqa: F811 - the fixture imported above
    november(acme)
    close_period(month=NOV, now=AFTER_NOV)
    return Statement.objects.get(account=acme, month=NOV)


def test_the_list_shows_the_closed_months_and_finds_an_org(operator, statement):
    listed = operator.get("/admin/accounting/statement/")
    found = operator.get("/admin/accounting/statement/?q=acme")
    missed = operator.get("/admin/accounting/statement/?q=globex")

    assert listed.status_code == 200
    assert "2026-11" in listed.text
    assert "143.50000 USD" in listed.text
    assert f"/admin/accounting/statement/{statement.pk}/print/" in listed.text
    assert "2026-11" in found.text
    assert "0 statements" in missed.text


def test_a_statement_cannot_be_changed_in_the_admin(operator, statement):
    page = operator.get(f"/admin/accounting/statement/{statement.pk}/change/")
    post = operator.post(f"/admin/accounting/statement/{statement.pk}/change/", {"charges": "0"})

    assert page.status_code == 200
    assert 'name="_save"' not in page.text
    assert post.status_code == 403
    statement.refresh_from_db()
    assert str(statement.charges) == "4.50000"
    assert operator.get("/admin/accounting/statement/add/").status_code == 403


def test_the_print_page_is_self_contained_and_in_the_shared_money_format(operator, statement):
    response = operator.get(f"/admin/accounting/statement/{statement.pk}/print/")

    assert response.status_code == 200
    html = response.text
    assert "Statement — acme, 2026-11" in html
    assert "2026-11-01 to 2026-11-30 (UTC)" in html
    figures = re.findall(r"<td>([^<]+)</td><td class=\"num\">([^<]+)</td>", html)
    assert figures[:5] == [
        ("Opening balance", "100.00000 USD"),
        ("Charges (usage)", "-4.50000 USD"),
        ("Top-ups", "50.00000 USD"),
        ("Adjustments", "-2.00000 USD"),
        ("Closing balance", "143.50000 USD"),
    ]
    assert "<td>gpt-4o</td>" in html and "3.75000 USD" in html
    assert "<td>2026-11-29</td>" in html
    assert "@media print" in html
    assert not re.search(r"(src|href)=\"(https?:)?//", html)  # nothing from the internet
    assert "<script" not in html


def test_the_print_page_needs_the_view_permission(client, statement):
    staff = User.objects.create_user("clerk", password="x", is_staff=True)
    client.force_login(staff)
    url = f"/admin/accounting/statement/{statement.pk}/print/"
    refused = client.get(url)
    staff.user_permissions.add(Permission.objects.get(codename="view_statement"))

    assert refused.status_code == 403
    assert client.get(url).status_code == 200


def test_the_account_page_links_to_its_statements(operator, statement):
    response = operator.get(f"/admin/accounting/account/{statement.account_id}/change/")

    assert response.status_code == 200
    assert f"/admin/accounting/statement/?account__id__exact={statement.account_id}" in response.text
    listed = operator.get(f"/admin/accounting/statement/?account__id__exact={statement.account_id}")
    assert listed.status_code == 200
    assert "2026-11" in listed.text
