from decimal import Decimal

import pytest
from django.db import IntegrityError, connection, transaction
from django.test.utils import CaptureQueriesContext
from uuid_utils.compat import uuid7

from accounting.accounts import AccountExists, account_create, account_update
from accounting.ledger import LedgerError, ledger_adjust, ledger_check, ledger_topup
from accounting.models import Account, LedgerLine, LedgerTransaction
from accounting.usage_posting import Outcome, UsagePosting, ledger_post_usage, ledger_post_usage_batch
from tests.factories import balance, make_accounts

pytestmark = pytest.mark.django_db


def usage(**overrides) -> dict:
    values = {
        "usage_id": uuid7(),
        "transno": "req-1",
        "userorgid": "acme",
        "ownerid": "openai",
        "amount": Decimal("0.60000"),
        "cost": Decimal("0.45000"),
        "currency": "USD",
    }
    values.update(overrides)
    return values


def test_posting_moves_amount_from_customer_cost_to_owner_margin_to_platform():
    make_accounts(funds=Decimal("10"))

    result = ledger_post_usage(**usage(transno="req-7"))

    assert result.outcome == Outcome.POSTED
    txn = LedgerTransaction.objects.get(kind="usage")
    assert (txn.reference, txn.amount, txn.currency) == ("req-7", Decimal("0.60000"), "USD")
    lines = {
        (line.account.org, line.account.kind): line.amount for line in txn.lines.select_related("account")
    }
    assert lines == {
        ("acme", "customer"): Decimal("-0.60000"),
        ("openai", "owner"): Decimal("0.45000"),
        ("platform", "platform"): Decimal("0.15000"),
    }
    assert balance("acme") == Decimal("9.40000")
    assert balance("openai", "owner") == Decimal("0.45000")
    assert balance("platform", "platform") == Decimal("0.15000")
    assert ledger_check().ok


def test_posting_the_same_usage_twice_writes_one_transaction():
    make_accounts()
    values = usage()

    first = ledger_post_usage(**values)
    second = ledger_post_usage(**values)

    assert (first.outcome, second.outcome) == (Outcome.POSTED, Outcome.ALREADY_POSTED)
    assert LedgerTransaction.objects.filter(usage_id=values["usage_id"]).count() == 1
    assert balance("acme") == Decimal("1000") - Decimal("0.6")


def test_the_unique_constraint_refuses_a_second_transaction_for_a_usage_record():
    usage_id = uuid7()
    LedgerTransaction.objects.create(kind="usage", usage_id=usage_id, currency="USD", amount=1)

    with pytest.raises(IntegrityError), transaction.atomic():
        LedgerTransaction.objects.create(kind="usage", usage_id=usage_id, currency="USD", amount=1)


def test_zero_lines_are_not_written_and_need_no_account():
    # The platform's own model: no cost, so no owner account is needed.
    make_accounts(owners=())

    ledger_post_usage(**usage(ownerid="", cost=Decimal(0)))

    assert LedgerLine.objects.filter(transaction__kind="usage").count() == 2
    assert balance("platform", "platform") == Decimal("0.60000")


def test_selling_below_cost_charges_the_platform():
    make_accounts()

    ledger_post_usage(**usage(amount=Decimal("0.4"), cost=Decimal("0.5")))

    assert balance("platform", "platform") == Decimal("-0.10000")
    assert ledger_check().ok


def test_nothing_billable_is_skipped_without_a_transaction():
    result = ledger_post_usage(**usage(amount=Decimal(0), cost=Decimal(0)))

    assert result.outcome == Outcome.SKIPPED
    assert not LedgerTransaction.objects.exists()


@pytest.mark.parametrize(
    ("setup", "values", "error_code", "words"),
    [
        ({"customers": ()}, {}, "no_account", "'acme' has no customer account"),
        ({"owners": ()}, {}, "no_account", "'openai' has no owner account"),
        ({}, {"ownerid": ""}, "no_account", "no ownerid"),
        ({}, {"currency": "EUR"}, "no_account", "in USD, not in EUR"),
        ({}, {"amount": None}, "no_price", "no amount"),
        ({}, {"cost": None}, "no_price", "no cost"),
        ({"funds": Decimal("0.5")}, {}, "insufficient_balance", "cannot pay 0.60000"),
    ],
)
def test_each_refusal_has_its_error_code(setup, values, error_code, words):
    make_accounts(**setup)

    with pytest.raises(LedgerError) as raised:
        ledger_post_usage(**usage(**values))

    assert raised.value.error_code == error_code
    assert words in raised.value.message
    assert not LedgerTransaction.objects.filter(kind="usage").exists()


def test_no_platform_account_is_no_account():
    account_create(org="acme", kind="customer", credit_limit=Decimal(5))
    account_create(org="openai", kind="owner")

    with pytest.raises(LedgerError) as raised:
        ledger_post_usage(**usage())

    assert raised.value.error_code == "no_account"
    assert "platform account" in raised.value.message


@pytest.mark.parametrize("frozen", [("acme", "customer"), ("openai", "owner"), ("platform", "platform")])
def test_a_frozen_account_refuses_the_posting(frozen):
    accounts = make_accounts()
    account_update(account=accounts[frozen], status="frozen")

    with pytest.raises(LedgerError) as raised:
        ledger_post_usage(**usage())

    assert raised.value.error_code == "account_frozen"
    assert balance("acme") == Decimal("1000")


def test_the_credit_limit_lets_the_balance_go_that_far_below_zero_and_no_further():
    make_accounts(funds=Decimal(0), credit_limit=Decimal("1.00000"))

    ledger_post_usage(**usage(amount=Decimal("0.6"), cost=Decimal(0)))
    ledger_post_usage(**usage(amount=Decimal("0.4"), cost=Decimal(0)))  # exactly at the limit
    with pytest.raises(LedgerError) as raised:
        ledger_post_usage(**usage(amount=Decimal("0.00001"), cost=Decimal(0)))

    assert raised.value.error_code == "insufficient_balance"
    assert balance("acme") == Decimal("-1.00000")


def test_a_batch_checks_each_record_against_the_balance_the_ones_before_it_left():
    make_accounts(customers=("acme", "globex"), funds=Decimal("1.0"))
    postings = [
        UsagePosting(**usage(amount=Decimal("0.6"), cost=Decimal("0.1"))),
        UsagePosting(**usage(amount=Decimal("0.6"), cost=Decimal("0.1"))),  # acme has 0.4 left
        UsagePosting(**usage(userorgid="globex", amount=Decimal("0.6"), cost=Decimal("0.1"))),
        UsagePosting(**usage(userorgid="initech")),  # no account
        UsagePosting(**usage(amount=Decimal("0.4"), cost=Decimal(0))),  # fits what acme has left
        UsagePosting(**usage(amount=None)),
    ]

    results = ledger_post_usage_batch(usages=postings)

    assert [(r.outcome, r.error_code) for r in results] == [
        (Outcome.POSTED, ""),
        (Outcome.FAILED, "insufficient_balance"),
        (Outcome.POSTED, ""),
        (Outcome.FAILED, "no_account"),
        (Outcome.POSTED, ""),
        (Outcome.FAILED, "no_price"),
    ]
    assert balance("acme") == Decimal(0)
    assert balance("globex") == Decimal("0.4")
    assert LedgerTransaction.objects.filter(kind="usage").count() == 3
    assert ledger_check().ok


@pytest.mark.postgres
def test_accounts_are_locked_in_primary_key_order_in_one_statement():
    make_accounts(customers=("zeta", "acme"), owners=("openai", "anthropic"))
    postings = [
        UsagePosting(**usage(userorgid="zeta", ownerid="openai")),
        UsagePosting(**usage(userorgid="acme", ownerid="anthropic")),
    ]

    with CaptureQueriesContext(connection) as queries:
        ledger_post_usage_batch(usages=postings)

    locks = [q["sql"] for q in queries if "FOR UPDATE" in q["sql"]]
    assert len(locks) == 1
    assert 'ORDER BY "accounting_account"."id" ASC FOR UPDATE' in locks[0]


def test_account_create_refuses_a_second_account_of_the_same_kind():
    account_create(org="acme", kind="customer")
    account_create(org="acme", kind="owner")  # an org can be both
    account_create(org="platform", kind="platform")

    with pytest.raises(AccountExists):
        account_create(org="acme", kind="customer", currency="EUR")
    with pytest.raises(AccountExists):
        account_create(org="other-name", kind="platform")
    account_create(org="platform-eur", kind="platform", currency="EUR")  # one per currency


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"org": " "}, "org"),
        ({"kind": "external"}, "kind"),
        ({"currency": "usd"}, "currency"),
        ({"credit_limit": Decimal(-1)}, "credit_limit"),
    ],
)
def test_account_create_names_the_bad_argument(kwargs, field):
    with pytest.raises(ValueError, match=f"^{field}:"):
        account_create(**{"org": "acme", "kind": "customer", **kwargs})


def test_topup_credits_the_account_from_the_external_account():
    account_create(org="acme", kind="customer")

    txn, created = ledger_topup(org="acme", amount=Decimal("25.5"), memo="invoice 7", created_by="ops")

    assert created
    assert (txn.kind, txn.amount, txn.created_by, txn.memo) == (
        "topup",
        Decimal("25.50000"),
        "ops",
        "invoice 7",
    )
    assert balance("acme") == Decimal("25.50000")
    assert Account.objects.get(kind="external").balance == Decimal("-25.50000")
    assert ledger_check().ok


def test_topup_is_idempotent_on_its_reference():
    account_create(org="acme", kind="customer")

    first, created_first = ledger_topup(org="acme", amount=Decimal(10), reference="pay-1")
    again, created_again = ledger_topup(org="acme", amount=Decimal(10), reference="pay-1")

    assert (created_first, created_again) == (True, False)
    assert again.pk == first.pk
    assert balance("acme") == Decimal(10)
    with pytest.raises(ValueError, match="^reference:"):
        ledger_topup(org="acme", amount=Decimal(11), reference="pay-1")


def test_topup_needs_a_positive_amount_and_an_account():
    with pytest.raises(ValueError, match="^amount:"):
        ledger_topup(org="acme", amount=Decimal(0))
    with pytest.raises(LedgerError) as raised:
        ledger_topup(org="acme", amount=Decimal(1))
    assert raised.value.error_code == "no_account"


def test_adjustment_moves_the_balance_either_way_and_says_why():
    make_accounts(funds=Decimal(10))

    txn, _ = ledger_adjust(org="acme", amount=Decimal(-3), memo="refund reversed", created_by="ops")

    assert txn.kind == "adjustment"
    assert balance("acme") == Decimal(7)
    assert ledger_check().ok
    with pytest.raises(ValueError, match="^memo:"):
        ledger_adjust(org="acme", amount=Decimal(1), memo=" ")


def test_ledger_check_finds_a_balance_that_does_not_match_its_lines():
    make_accounts(funds=Decimal(10))
    Account.objects.filter(org="acme").update(balance=Decimal(11))

    check = ledger_check()

    assert not check.ok
    assert list(check.balance_mismatches.values()) == [(Decimal(11), Decimal(10))]


def test_ledger_check_finds_a_transaction_whose_lines_do_not_sum_to_zero():
    """Lines written behind the service's back (a bad migration, a hand-made fix) that leave one
    transaction off by a single quantum: the check names that transaction and no other."""
    accounts = make_accounts(funds=Decimal(10))
    acme, platform = accounts[("acme", "customer")], accounts[("platform", "platform")]
    broken = LedgerTransaction.objects.create(
        kind="adjustment", reference="hand-fix-1", amount=Decimal(1), currency="USD", memo="by hand"
    )
    LedgerLine.objects.bulk_create(
        [
            LedgerLine(transaction=broken, account=acme, amount=Decimal("1.00001")),
            LedgerLine(transaction=broken, account=platform, amount=Decimal(-1)),
        ]
    )
    # The balances follow their lines, so only the transaction itself is wrong.
    Account.objects.filter(pk=acme.pk).update(balance=Decimal("11.00001"))
    Account.objects.filter(pk=platform.pk).update(balance=platform.balance - 1)

    check = ledger_check()

    assert not check.ok
    assert check.unbalanced_transactions == [broken.pk]
    assert check.total == Decimal("0.00001")
    assert check.balance_mismatches == {}
