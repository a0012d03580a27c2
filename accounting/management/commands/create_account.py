from decimal import Decimal, InvalidOperation

from django.core.management.base import BaseCommand, CommandError, CommandParser

from accounting.accounts import AccountExists, account_create
from accounting.models import Account


def _money(value: str) -> Decimal:
    try:
        amount = Decimal(value)
    except InvalidOperation:
        raise CommandError(f"--credit-limit: {value!r} is not a number") from None
    if not amount.is_finite():
        raise CommandError(f"--credit-limit: {value!r} is not a number")
    return amount


class Command(BaseCommand):
    help = "Create an org's ledger account (customer, model owner, or the platform's own)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--org", required=True, help="The org id: userorgid for customers, ownerid for owners."
        )
        parser.add_argument("--kind", required=True, choices=[str(kind) for kind in Account.CREATABLE_KINDS])
        parser.add_argument(
            "--credit-limit", default="0", help="How far below zero a customer's balance may go (default 0)."
        )
        parser.add_argument("--currency", default="USD", help="ISO 4217 code (default USD).")

    def handle(self, *args, org: str, kind: str, credit_limit: str, currency: str, **options) -> None:
        try:
            account = account_create(org=org, kind=kind, currency=currency, credit_limit=_money(credit_limit))
        except (AccountExists, ValueError) as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(
            f"Created the {account.kind} account of {account.org} ({account.currency}, credit limit "
            f"{account.credit_limit}, balance {account.balance})."
        )
