from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from accounting.models import Account

pytestmark = pytest.mark.django_db


def test_create_account_creates_it():
    out = StringIO()

    call_command(
        "create_account",
        "--org",
        "acme",
        "--kind",
        "customer",
        "--credit-limit",
        "25.5",
        "--currency",
        "EUR",
        stdout=out,
    )

    account = Account.objects.get(org="acme")
    assert (account.kind, account.credit_limit, account.currency, account.balance) == (
        "customer",
        Decimal("25.5"),
        "EUR",
        Decimal(0),
    )
    assert "Created the customer account of acme" in out.getvalue()


def test_create_account_defaults_to_no_credit_in_usd():
    call_command("create_account", "--org", "platform", "--kind", "platform", stdout=StringIO())

    account = Account.objects.get()
    assert (account.kind, account.credit_limit, account.currency) == ("platform", Decimal(0), "USD")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--org", "acme", "--kind", "customer", "--credit-limit", "lots"], "--credit-limit"),
        (["--org", "acme", "--kind", "customer", "--credit-limit", "-1"], "credit_limit"),
        (["--org", "acme", "--kind", "customer", "--currency", "dollars"], "currency"),
        (["--org", "  ", "--kind", "customer"], "org"),
    ],
)
def test_create_account_refuses_bad_arguments(args, message):
    with pytest.raises(CommandError, match=message):
        call_command("create_account", *args, stdout=StringIO())
    assert not Account.objects.exists()


def test_create_account_refuses_an_unknown_kind():
    with pytest.raises(CommandError):
        call_command("create_account", "--org", "acme", "--kind", "external", stdout=StringIO())


def test_create_account_refuses_a_second_account_of_the_same_kind():
    call_command("create_account", "--org", "acme", "--kind", "customer", stdout=StringIO())

    with pytest.raises(CommandError, match="already has a customer account"):
        call_command("create_account", "--org", "acme", "--kind", "customer", stdout=StringIO())
