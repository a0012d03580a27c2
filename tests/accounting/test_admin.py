from decimal import Decimal

import pytest
from django.contrib.auth.models import User

from accounting.models import Account, AccountingFailure, LedgerTransaction
from llmlog.models import LLMUsage
from llmlog.posting import account_pending_usage
from tests.accounting.factories import balance, insert_usage, make_accounts, usage_row

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


@pytest.mark.parametrize(
    ("url", "search"),
    [
        ("/admin/accounting/account/", "acme"),
        ("/admin/accounting/ledgertransaction/", "a-1"),
        ("/admin/accounting/ledgerline/", "acme"),
        ("/admin/accounting/accountingfailure/", "g-1"),
    ],
)
def test_changelists_and_search_render(operator, ledger, url, search):
    page = operator.get(url)
    found = operator.get(url, {"q": search})

    assert page.status_code == 200
    assert found.status_code == 200
    assert search in found.content.decode()


def test_a_transaction_page_shows_its_lines_read_only(operator, ledger):
    txn = LedgerTransaction.objects.get(reference="a-1")

    page = operator.get(f"/admin/accounting/ledgertransaction/{txn.pk}/change/")

    assert page.status_code == 200
    assert "-0.00600" in page.content.decode()
    assert operator.post(f"/admin/accounting/ledgertransaction/{txn.pk}/delete/").status_code == 403


def test_an_operator_creates_an_account_in_the_admin(operator):
    response = operator.post(
        "/admin/accounting/account/add/",
        {"org": "initech", "kind": "customer", "currency": "USD", "credit_limit": "10", "status": "active"},
    )

    assert response.status_code == 302
    account = Account.objects.get(org="initech")
    assert (account.kind, account.credit_limit, account.balance) == ("customer", Decimal(10), Decimal(0))


def test_an_operator_changes_the_limit_but_not_the_balance(operator, ledger):
    account = Account.objects.get(org="acme", kind="customer")

    response = operator.post(
        f"/admin/accounting/account/{account.pk}/change/",
        {"credit_limit": "3", "status": "frozen", "balance": "999"},
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


def test_retry_now_says_how_many_succeeded_and_failed(operator, ledger):
    from accounting.ledger import ledger_topup

    ledger_topup(org="acme", amount=Decimal(1))
    ids = list(AccountingFailure.objects.values_list("pk", flat=True))

    page = operator.post(
        "/admin/accounting/accountingfailure/", {"action": "retry_now", "_selected_action": ids}, follow=True
    )

    assert "Retried 2 failure(s): 1 succeeded, 1 failed" in page.content.decode()
    assert LLMUsage.objects.get(transno="a-2").accounting_status == "accounted"
    assert AccountingFailure.objects.get(transno="a-2").resolved_by == "ops"


def test_resolve_and_ignore_actions_record_who(operator, ledger):
    a2, g1 = AccountingFailure.objects.get(transno="a-2"), AccountingFailure.objects.get(transno="g-1")

    resolved = operator.post(
        "/admin/accounting/accountingfailure/",
        {"action": "resolve", "_selected_action": [a2.pk]},
        follow=True,
    )
    ignored = operator.post(
        "/admin/accounting/accountingfailure/",
        {"action": "ignore", "_selected_action": [a2.pk, g1.pk]},
        follow=True,
    )

    assert "Resolved 1 failure(s); 0 failed." in resolved.content.decode()
    assert "Ignored 1 failure(s); 1 failed (already resolved)." in ignored.content.decode()
    a2.refresh_from_db()
    g1.refresh_from_db()
    assert (a2.status, a2.resolved_by) == ("resolved", "ops")
    assert (g1.status, g1.resolved_by) == ("ignored", "ops")


def test_a_failure_cannot_be_edited_or_added_in_the_admin(operator, ledger):
    failure = AccountingFailure.objects.first()

    page = operator.get(f"/admin/accounting/accountingfailure/{failure.pk}/change/")

    assert page.status_code == 200
    assert 'name="error_code"' not in page.content.decode()
    assert operator.get("/admin/accounting/accountingfailure/add/").status_code == 403
