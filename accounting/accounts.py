"""Account services: create an account, change its limit, status or statement zone, lock it.

An account's identity (org, kind, currency) never changes once it exists; its balance only moves
through ledger lines (`accounting.ledger`, `accounting.usage_posting`). Locking goes through
`accounting.ledger.lock_accounts`, the ledger's one lock order.
"""

from decimal import Decimal
from typing import Any

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from accounting.ledger import lock_accounts
from accounting.models import Account, validate_time_zone
from core.money import quantize_money


class AccountExists(Exception):
    """create_account for an (org, kind) that already has an account."""


def account_create(
    *,
    org: str,
    kind: str,
    currency: str = "USD",
    credit_limit: Decimal = Decimal(0),
    status: str = Account.Status.ACTIVE,
    time_zone: str | None = None,
) -> Account:
    """A new account with a zero balance; its statements' months in `time_zone` (default TIME_ZONE).
    Raises AccountExists, or ValueError naming a bad argument."""
    org = org.strip()
    if not org:
        raise ValueError("org: must not be empty")
    if kind not in Account.CREATABLE_KINDS:
        raise ValueError(f"kind: must be one of {', '.join(Account.CREATABLE_KINDS)}, got {kind!r}")
    if len(currency) != 3 or not currency.isalpha() or not currency.isupper():
        raise ValueError(f"currency: expected a 3-letter ISO code such as USD, got {currency!r}")
    if credit_limit < 0:
        raise ValueError("credit_limit: must not be negative")
    if status not in Account.Status.values:
        raise ValueError(f"status: must be one of {', '.join(Account.Status.values)}")
    zone = {} if time_zone is None else {"time_zone": _checked_time_zone(time_zone)}
    if _find_account(org=org, kind=kind, currency=currency) is not None:
        raise AccountExists(_exists_message(org, kind, currency))
    try:
        with transaction.atomic():
            return Account.objects.create(
                org=org,
                kind=kind,
                currency=currency,
                credit_limit=quantize_money(credit_limit),
                status=status,
                **zone,
            )
    except IntegrityError:  # created by someone else between the look-up and the insert
        raise AccountExists(_exists_message(org, kind, currency)) from None


def _checked_time_zone(name: str) -> str:
    try:
        validate_time_zone(name)
    except ValidationError as exc:
        raise ValueError(f"time_zone: {exc.messages[0]}") from None
    return name


def _exists_message(org: str, kind: str, currency: str) -> str:
    if kind in (Account.Kind.PLATFORM, Account.Kind.EXTERNAL):
        return f"There is already a {kind} account in {currency}."
    return f"Org {org!r} already has a {kind} account."


def _find_account(*, org: str, kind: str, currency: str) -> Account | None:
    if kind in (Account.Kind.PLATFORM, Account.Kind.EXTERNAL):
        return Account.objects.filter(kind=kind, currency=currency).first()
    return Account.objects.filter(org=org, kind=kind).first()


def account_update(
    *,
    account: Account,
    credit_limit: Decimal | None = None,
    status: str | None = None,
    time_zone: str | None = None,
) -> Account:
    """Change an account's credit limit, freeze/unfreeze it, or set the zone of its statements' months
    (from the next close on). The balance only moves through lines."""
    changes: dict[str, Any] = {}
    if time_zone is not None:
        changes["time_zone"] = _checked_time_zone(time_zone)
    if credit_limit is not None:
        if credit_limit < 0:
            raise ValueError("credit_limit: must not be negative")
        changes["credit_limit"] = quantize_money(credit_limit)
    if status is not None:
        if status not in Account.Status.values:
            raise ValueError(f"status: must be one of {', '.join(Account.Status.values)}")
        changes["status"] = status
    if changes:
        changes["updated_at"] = timezone.now()
        Account.objects.filter(pk=account.pk).update(**changes)
        account.refresh_from_db()
    return account


def account_lock(*, account_id: int) -> Account:
    """Lock one account until the caller's transaction ends: no line of it commits meanwhile, since every
    writer of lines holds the locks of their accounts (a period close reads its last line id so)."""
    (account,) = lock_accounts(Q(pk=account_id))
    return account
