"""Accounts (create, limit, top-up, freeze) and the ledger (read-only, searchable by usage id and org)
in the admin. The failed-postings page is tested in tests/llmlog/test_failures_admin.py."""

import re
from decimal import Decimal

import pytest
from django.contrib.auth.models import User
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from accounting.ledger import ledger_topup
from accounting.models import Account, LedgerLine, LedgerTransaction
from llmlog.posting import account_pending_usage
from tests.factories import balance, insert_usage, make_accounts, usage_row

pytestmark = pytest.mark.django_db


@pytest.fixture
def operator(client):
    user = User.objects.create_superuser("ops", "ops@example.com", "pw")
    client.force_login(user)
    return client


@pytest.fixture
def ledger():
    """acme can pay for one record, not two; globex has no account."""
    make_accounts(funds=Decimal("0.01"))
    insert_usage(
        [usage_row(transno="a-1"), usage_row(transno="a-2"), usage_row(transno="g-1", userorgid="globex")]
    )
    account_pending_usage()


def _posted_usage_id() -> str:
    return str(LedgerTransaction.objects.get(reference="a-1").usage_id)


@pytest.mark.parametrize(
    ("url", "search", "matching"),
    [
        ("/admin/accounting/account/", lambda: "acme", lambda: Account.objects.filter(org="acme")),
        (
            "/admin/accounting/ledgertransaction/",
            _posted_usage_id,  # a usage transaction is found by its usage id, not its transno
            lambda: LedgerTransaction.objects.filter(reference="a-1"),
        ),
        (
            "/admin/accounting/ledgerline/",
            lambda: "acme",
            lambda: LedgerLine.objects.filter(account__org="acme"),
        ),
    ],
)
def test_changelists_and_search_render(operator, ledger, url, search, matching):
    page = operator.get(url)
    found = operator.get(url, {"q": search()})

    assert page.status_code == 200
    assert found.status_code == 200
    # The admin echoes `q` into the search box, so the term being on the page proves nothing: the rows
    # found are the matching ones, and each is rendered with its change link.
    expected = set(matching().values_list("pk", flat=True))
    assert expected
    assert {row.pk for row in found.context["cl"].result_list} == expected
    html = found.content.decode()
    assert all(f'href="{url}{pk}/change/' in html for pk in expected), html[:500]


def test_a_transaction_page_shows_its_lines_read_only(operator, ledger):
    txn = LedgerTransaction.objects.get(reference="a-1")

    page = operator.get(f"/admin/accounting/ledgertransaction/{txn.pk}/change/")

    assert page.status_code == 200
    assert "-0.00600" in page.content.decode()
    assert operator.post(f"/admin/accounting/ledgertransaction/{txn.pk}/delete/").status_code == 403


def test_ledger_pages_show_money_in_the_shared_format(operator):
    make_accounts(funds=Decimal("12345.6"))  # a top-up of 12,345.6 into acme's account

    topup = LedgerTransaction.objects.get(kind="topup")
    listed = operator.get("/admin/accounting/ledgertransaction/").content.decode()
    page = operator.get(f"/admin/accounting/ledgertransaction/{topup.pk}/change/").content.decode()

    cells = re.findall(r'<td class="field-amount_display[^"]*">(.*?)</td>', listed, re.S)
    assert cells == ['<span class="money">12,345.60000</span>'], cells
    # The transaction's lines: the customer's credit and the platform's debit, both as money.
    lines = re.findall(r'<td class="field-amount_display">\s*<p>(.*?)</p>', page, re.S)
    assert sorted(lines) == [f'<span class="money">{sign}12,345.60000</span>' for sign in ("-", "")]


def test_an_operator_creates_an_account_in_the_admin(operator):
    response = operator.post(
        "/admin/accounting/account/add/",
        {
            "org": "initech",
            "kind": "customer",
            "currency": "USD",
            "credit_limit": "10",
            "status": "active",
            "time_zone": "Asia/Tokyo",
        },
    )

    assert response.status_code == 302
    account = Account.objects.get(org="initech")
    assert (account.kind, account.credit_limit, account.balance) == ("customer", Decimal(10), Decimal(0))
    assert account.time_zone == "Asia/Tokyo"


def test_an_operator_sets_the_time_zone_of_an_accounts_statements(operator, ledger):
    account = Account.objects.get(org="acme", kind="customer")
    url = f"/admin/accounting/account/{account.pk}/change/"
    fields = {"credit_limit": "0", "status": "active"}

    refused = operator.post(url, {**fields, "time_zone": "Mars/Olympus"})
    changed = operator.post(url, {**fields, "time_zone": "Europe/Paris"})

    assert refused.status_code == 200 and "is not an IANA time zone" in refused.content.decode()
    assert changed.status_code == 302
    account.refresh_from_db()
    assert account.time_zone == "Europe/Paris"


def test_an_operator_changes_the_limit_but_not_the_balance(operator, ledger):
    account = Account.objects.get(org="acme", kind="customer")

    response = operator.post(
        f"/admin/accounting/account/{account.pk}/change/",
        {"credit_limit": "3", "status": "frozen", "time_zone": "UTC", "balance": "999"},
    )

    assert response.status_code == 302
    account.refresh_from_db()
    assert (account.credit_limit, account.status, account.balance) == (
        Decimal(3),
        "frozen",
        Decimal("0.00400"),
    )


def test_the_topup_action_asks_for_an_amount_then_tops_up(operator, ledger):
    accounts = list(Account.objects.filter(kind="customer").values_list("pk", flat=True))
    data = {"action": "topup", "_selected_action": accounts}

    form = operator.post("/admin/accounting/account/", data)
    done = operator.post(
        "/admin/accounting/account/", {**data, "apply": "1", "amount": "5", "memo": "gift"}, follow=True
    )

    assert "Top up accounts" in form.content.decode()
    assert "Topped up 1 account(s); 0 failed." in done.content.decode()
    assert balance("acme") == Decimal("5.00400")


def test_the_topup_action_refuses_a_bad_amount(operator, ledger):
    account = Account.objects.get(org="acme", kind="customer")

    page = operator.post(
        "/admin/accounting/account/",
        {"action": "topup", "_selected_action": [account.pk], "apply": "1", "amount": "-1"},
    )

    assert page.status_code == 200
    assert "amount" in page.content.decode()
    assert balance("acme") == Decimal("0.00400")


def test_freeze_and_unfreeze_actions(operator, ledger):
    account = Account.objects.get(org="acme", kind="customer")

    operator.post("/admin/accounting/account/", {"action": "freeze", "_selected_action": [account.pk]})
    account.refresh_from_db()
    assert account.status == "frozen"
    operator.post("/admin/accounting/account/", {"action": "unfreeze", "_selected_action": [account.pk]})
    account.refresh_from_db()
    assert account.status == "active"


def test_the_account_list_shows_what_a_customer_can_spend_and_links_to_its_lines(operator, ledger):
    account = Account.objects.get(org="acme", kind="customer")
    Account.objects.filter(pk=account.pk).update(credit_limit=Decimal(2))

    html = operator.get("/admin/accounting/account/").content.decode()
    lines = operator.get(f"/admin/accounting/ledgerline/?account__id__exact={account.pk}")

    row = re.search(r"<tr>.*?acme.*?</tr>", html, re.S).group(0)
    assert "2.00400" in row  # balance 0.004 + credit limit 2
    assert f"?account__id__exact={account.pk}" in row
    assert {line.account_id for line in lines.context["cl"].result_list} == {account.pk}
    assert len(lines.context["cl"].result_list) == 2  # the top-up and a-1's posting


def test_a_topup_with_the_same_reference_tops_up_once(operator, ledger):
    account = Account.objects.get(org="acme", kind="customer")
    data = {
        "action": "topup",
        "_selected_action": [account.pk],
        "apply": "1",
        "amount": "5",
        "reference": "inv-1",
    }

    first = operator.post("/admin/accounting/account/", data, follow=True)
    second = operator.post("/admin/accounting/account/", data, follow=True)

    assert "Topped up 1 account(s); 0 failed." in first.content.decode()
    assert "Topped up 0 account(s); 0 failed. 1 already topped up with this reference: not again." in (
        second.content.decode()
    )
    assert balance("acme") == Decimal("5.00400")
    assert LedgerTransaction.objects.get(kind="topup", reference=f"inv-1:{account.pk}").created_by == "ops"


def test_a_topup_of_an_account_that_takes_none_says_why(operator, ledger):
    platform = Account.objects.get(kind="platform")
    acme = Account.objects.get(org="acme", kind="customer")

    page = operator.post(
        "/admin/accounting/account/",
        {"action": "topup", "_selected_action": [platform.pk, acme.pk], "apply": "1", "amount": "1"},
        follow=True,
    )

    messages = [str(message) for message in page.context["messages"]]
    assert messages[0] == "Topped up 1 account(s); 1 failed."
    assert "top-ups and adjustments go to a customer or owner account" in messages[1]
    assert balance("acme") == Decimal("1.00400")


def test_an_account_cannot_be_deleted(operator, ledger):
    account = Account.objects.get(org="acme", kind="customer")
    assert (
        operator.post(f"/admin/accounting/account/{account.pk}/delete/", {"post": "yes"}).status_code == 403
    )
    actions = operator.get("/admin/accounting/account/").context["action_form"].fields["action"].choices
    assert [name for name, _ in actions if name] == ["topup", "freeze", "unfreeze"]


# --- the ledger: read-only, searchable by usage id and org ---------------------------------------


def results(client: Client, url: str, q: str) -> list:
    response = client.get(url, {"q": q})
    assert response.status_code == 200
    return list(response.context["cl"].result_list)


def test_ledger_transactions_are_found_by_usage_id_id_org_and_topup_reference(operator, ledger):
    ledger_topup(org="acme", amount=Decimal(1), reference="inv-7")
    posted = LedgerTransaction.objects.get(reference="a-1")
    url = "/admin/accounting/ledgertransaction/"

    assert [t.pk for t in results(operator, url, str(posted.usage_id))] == [posted.pk]
    assert [t.pk for t in results(operator, url, str(posted.pk))] == [posted.pk]
    assert [t.reference for t in results(operator, url, "inv-7")] == ["inv-7"]
    assert {(t.kind, t.reference) for t in results(operator, url, "acme")} == {
        ("topup", ""),
        ("topup", "inv-7"),
        ("usage", "a-1"),
    }
    assert {t.reference for t in results(operator, url, "openai")} == {"a-1"}  # the owner's side
    assert results(operator, url, "nobody") == []
    assert results(operator, url, "ACME") == []  # exact


def test_ledger_lines_are_found_by_org_usage_id_and_topup_reference(operator, ledger):
    ledger_topup(org="acme", amount=Decimal(1), reference="inv-7")
    posted = LedgerTransaction.objects.get(reference="a-1")
    url = "/admin/accounting/ledgerline/"

    assert {line.account.org for line in results(operator, url, "acme")} == {"acme"}
    assert len(results(operator, url, "acme")) == 3  # two top-ups and a-1
    by_usage = results(operator, url, str(posted.usage_id))
    assert {line.transaction_id for line in by_usage} == {posted.pk} and len(by_usage) == 3
    assert sum(line.amount for line in by_usage) == 0
    assert {line.transaction.reference for line in results(operator, url, "inv-7")} == {"inv-7"}


def test_the_ledger_cannot_be_added_changed_or_deleted_even_by_a_superuser(operator, ledger):
    txn = LedgerTransaction.objects.get(reference="a-1")
    line = LedgerLine.objects.filter(transaction=txn).first()
    for model, obj in (("ledgertransaction", txn), ("ledgerline", line)):
        base = f"/admin/accounting/{model}/"
        assert operator.get(f"{base}add/").status_code == 403
        assert operator.post(f"{base}{obj.pk}/delete/", {"post": "yes"}).status_code == 403
        page = operator.get(f"{base}{obj.pk}/change/")
        assert page.status_code == 200 and not page.context["has_change_permission"]
        assert 'name="_save"' not in page.content.decode()
        assert operator.get(base).context["action_form"] is None  # no action at all
    operator.post(f"/admin/accounting/ledgerline/{line.pk}/change/", {"amount": "999"})
    line.refresh_from_db()
    assert line.amount != Decimal(999)


@pytest.mark.parametrize(
    ("url", "params"),
    [
        (url, params)
        for url, kind in (
            ("/admin/accounting/ledgertransaction/", "kind__exact"),
            ("/admin/accounting/ledgerline/", "transaction__kind__exact"),
        )
        for params in ({}, {"q": "acme"}, {kind: "usage"}, {"_facets": "1"}, {"q": "a-1"})
    ],
)
def test_ledger_lists_never_count_the_whole_table(operator, ledger, url, params):
    with CaptureQueriesContext(connection) as captured:
        response = operator.get(url, params)
    assert response.status_code == 200
    counts = [q["sql"].upper() for q in captured.captured_queries if "COUNT(" in q["sql"].upper()]
    assert counts and all("LIMIT" in sql for sql in counts)


# --- permissions ----------------------------------------------------------------------------------


ACCOUNTING_PAGES = [
    "/admin/accounting/account/",
    "/admin/accounting/ledgertransaction/",
    "/admin/accounting/ledgerline/",
    "/admin/accounting/accountingfailure/",
]


def test_staff_without_rights_see_nothing_of_accounting(ledger, staff_session):
    client = staff_session("llmlog.view_modelprice")

    index = client.get(reverse("admin:index"))

    apps = {app["app_label"] for app in index.context["app_list"]}
    assert "accounting" not in apps
    assert client.get("/admin/accounting/").status_code == 404
    for url in ACCOUNTING_PAGES:
        assert client.get(url).status_code == 403, url


def test_staff_who_may_view_the_ledger_see_only_that(ledger, staff_session):
    client = staff_session("accounting.view_ledgertransaction", "accounting.view_ledgerline")

    index = client.get(reverse("admin:index"))

    models = {model["object_name"] for app in index.context["app_list"] for model in app["models"]}
    assert models == {"LedgerTransaction", "LedgerLine"}
    assert client.get("/admin/accounting/ledgerline/").status_code == 200
    assert client.get("/admin/accounting/account/").status_code == 403


def test_staff_who_may_only_view_accounts_cannot_top_up_or_freeze(ledger, staff_session):
    client = staff_session("accounting.view_account")
    account = Account.objects.get(org="acme", kind="customer")

    page = client.get("/admin/accounting/account/")
    for action in ("topup", "freeze"):
        client.post(
            "/admin/accounting/account/",
            {"action": action, "_selected_action": [account.pk], "apply": "1", "amount": "100"},
        )

    assert page.status_code == 200
    assert page.context["action_form"] is None  # no action at all
    account.refresh_from_db()
    assert (account.balance, account.status) == (Decimal("0.00400"), "active")
    assert (
        client.post(f"/admin/accounting/account/{account.pk}/change/", {"credit_limit": "9"}).status_code
        == 403
    )
