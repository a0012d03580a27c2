"""The ledger's core: its errors, the one lock order, balance checks, money in and out, the books' check.

Balances change by F() under row locks on the accounts, always taken in primary-key order in one
statement (`lock_accounts`), so two writers that touch the same accounts queue instead of deadlocking.
`lock_accounts` is the only place that locks accounts: top-ups and adjustments here, usage postings
(`accounting.usage_posting`), re-pricing adjustments (`accounting.adjustments`) and a period's close
(`accounting.accounts.account_lock`) all go through it. The writers move balances with `apply_deltas`;
transfers and re-pricing adjustments first check with `check_balances` that none passes the column.

Top-ups and operators' adjustments are transfers with the external account (money in and out of the
ledger), idempotent on their `reference`.
"""

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from uuid import UUID

from django.db import IntegrityError, transaction
from django.db.models import Case, F, Q, Sum, Value, When
from django.utils import timezone

from accounting.models import Account, AccountingFailure, LedgerLine, LedgerTransaction
from core.money import MONEY_DIGITS, MONEY_PLACES, MONEY_QUANTUM, quantize_money

ErrorCode = AccountingFailure.ErrorCode


class LedgerError(Exception):
    """A posting or transfer the ledger refuses; `error_code` is one of AccountingFailure.ErrorCode."""

    def __init__(self, error_code: str, message: str) -> None:
        super().__init__(message)
        self.error_code = error_code
        self.message = message


# The largest balance the column holds (Decimal(18,5)): 9,999,999,999,999.99999 either way.
MAX_BALANCE = Decimal(10) ** (MONEY_DIGITS - MONEY_PLACES) - MONEY_QUANTUM


class BalanceOverflow(ValueError):
    """A transfer would take a balance past what the balance column holds (MAX_BALANCE)."""


# --- balances -------------------------------------------------------------------------------------


def accounts_moved(*, customers: set[str], owners: set[str], currencies: set[str]) -> Q:
    """The accounts a set of postings moves: the customers' (amounts), the owners' (costs) and the
    platform's of each currency whose amount and cost differ (the margin)."""
    condition = Q(pk__in=[])
    if customers:
        condition |= Q(kind=Account.Kind.CUSTOMER, org__in=customers)
    if owners:
        condition |= Q(kind=Account.Kind.OWNER, org__in=owners)
    if currencies:
        condition |= Q(kind=Account.Kind.PLATFORM, currency__in=currencies)
    return condition


def lock_accounts(condition: Q) -> list[Account]:
    """Lock the accounts matching `condition`, in primary-key order: the one lock order of the ledger."""
    return list(Account.objects.select_for_update().filter(condition).order_by("pk"))


def apply_deltas(deltas: dict[int, Decimal], now: datetime) -> None:
    """balance = balance + delta for every account, in one UPDATE (the callers hold the locks)."""
    deltas = {pk: delta for pk, delta in deltas.items() if delta}
    if not deltas:
        return
    delta_of = Case(
        *(When(pk=pk, then=Value(delta)) for pk, delta in sorted(deltas.items())),
        output_field=Account._meta.get_field("balance"),
    )
    Account.objects.filter(pk__in=deltas).update(balance=F("balance") + delta_of, updated_at=now)


def check_balances(deltas: dict[Account, Decimal]) -> None:
    """BalanceOverflow unless every locked account's balance stays within the column: PostgreSQL would
    refuse the UPDATE (numeric field overflow, a 500) and SQLite would store a number nothing reads back
    exactly."""
    for account, delta in deltas.items():
        after = account.balance + delta
        if abs(after) > MAX_BALANCE:
            if account.kind == Account.Kind.EXTERNAL:
                whose = "the external (money in and out) account"
            else:
                whose = f"org {account.org!r}'s {account.kind} account"
            raise BalanceOverflow(
                f"amount: {abs(delta)} would take the balance of {whose} to {after}, past the largest "
                f"balance the ledger holds ({MAX_BALANCE})"
            )


# --- top-ups and adjustments ----------------------------------------------------------------------


def ledger_topup(
    *,
    org: str,
    amount: Decimal,
    kind: str = Account.Kind.CUSTOMER,
    reference: str = "",
    memo: str = "",
    created_by: str = "",
    now: datetime | None = None,
) -> tuple[LedgerTransaction, bool]:
    """Money in: the org's account gains `amount`, the external account gives it.

    Returns (transaction, created). Idempotent on `reference`: the same reference again returns the
    first top-up and False (the same reference with a different org or amount is a ValueError).
    Raises LedgerError(no_account) when the org has no account of that kind.
    """
    if amount <= 0:
        raise ValueError("amount: a top-up must be positive")
    return _external_transfer(
        kind_of_transaction=LedgerTransaction.Kind.TOPUP,
        org=org,
        account_kind=kind,
        amount=amount,
        reference=reference,
        memo=memo,
        created_by=created_by,
        now=now,
    )


def ledger_adjust(
    *,
    org: str,
    amount: Decimal,
    kind: str = Account.Kind.CUSTOMER,
    reference: str = "",
    memo: str,
    created_by: str = "",
    now: datetime | None = None,
) -> tuple[LedgerTransaction, bool]:
    """An operator's correction: the account gains (or, negative, loses) `amount`; `memo` says why.

    Returns (transaction, created), idempotent on `reference` like ledger_topup."""
    if amount == 0:
        raise ValueError("amount: an adjustment must not be zero")
    if not memo.strip():
        raise ValueError("memo: say why the balance is adjusted")
    return _external_transfer(
        kind_of_transaction=LedgerTransaction.Kind.ADJUSTMENT,
        org=org,
        account_kind=kind,
        amount=amount,
        reference=reference,
        memo=memo,
        created_by=created_by,
        now=now,
    )


def _external_transfer(
    *,
    kind_of_transaction: str,
    org: str,
    account_kind: str,
    amount: Decimal,
    reference: str,
    memo: str,
    created_by: str,
    now: datetime | None,
) -> tuple[LedgerTransaction, bool]:
    now = now or timezone.now()
    amount = quantize_money(amount)
    if reference:
        existing = _same_reference(kind_of_transaction, reference, org, amount)
        if existing is not None:
            return existing, False
    if account_kind not in (Account.Kind.CUSTOMER, Account.Kind.OWNER):
        raise ValueError("kind: top-ups and adjustments go to a customer or owner account")
    account = Account.objects.filter(org=org, kind=account_kind).first()
    if account is None:
        raise LedgerError(ErrorCode.NO_ACCOUNT, f"Org {org!r} has no {account_kind} account.")
    external = _external_account(currency=account.currency)
    try:
        with transaction.atomic():
            locked = {a.pk: a for a in lock_accounts(Q(pk__in=[account.pk, external.pk]))}
            check_balances({locked[account.pk]: amount, locked[external.pk]: -amount})
            txn = LedgerTransaction.objects.create(
                kind=kind_of_transaction,
                reference=reference,
                currency=account.currency,
                amount=amount,
                memo=memo[:255],
                created_by=created_by[:150],
                created_at=now,
            )
            LedgerLine.objects.bulk_create(
                [
                    LedgerLine(transaction=txn, account=account, amount=amount),
                    LedgerLine(transaction=txn, account=external, amount=-amount),
                ]
            )
            apply_deltas({account.pk: amount, external.pk: -amount}, now)
    except IntegrityError:
        # The same reference, committed by a concurrent request between our look-up and our insert.
        existing = _same_reference(kind_of_transaction, reference, org, amount) if reference else None
        if existing is None:
            raise
        return existing, False
    return txn, True


def _same_reference(kind: str, reference: str, org: str, amount: Decimal) -> LedgerTransaction | None:
    existing = LedgerTransaction.objects.filter(kind=kind, reference=reference).first()
    if existing is None:
        return None
    line = existing.lines.select_related("account").exclude(account__kind=Account.Kind.EXTERNAL).first()
    if line is None or line.account.org != org or line.amount != amount:
        raise ValueError(f"reference: {reference!r} was already used for a different {kind}")
    return existing


def _external_account(*, currency: str) -> Account:
    account = Account.objects.filter(kind=Account.Kind.EXTERNAL, currency=currency).first()
    if account is not None:
        return account
    try:
        with transaction.atomic():
            return Account.objects.create(
                org=Account.EXTERNAL_ORG, kind=Account.Kind.EXTERNAL, currency=currency
            )
    except IntegrityError:  # created concurrently
        return Account.objects.get(kind=Account.Kind.EXTERNAL, currency=currency)


# --- checks ---------------------------------------------------------------------------------------


@dataclass
class LedgerCheck:
    """What `ledger_check` found; all empty and zero means the books balance."""

    total: Decimal
    unbalanced_transactions: list[UUID]
    balance_mismatches: dict[int, tuple[Decimal, Decimal]]  # account pk -> (balance, sum of lines)

    @property
    def ok(self) -> bool:
        return self.total == 0 and not self.unbalanced_transactions and not self.balance_mismatches


def ledger_check() -> LedgerCheck:
    """Verify the invariants: lines of every transaction sum to zero, balances equal their lines.

    Sums are rounded to the money places: SQLite keeps decimals as floating point (its NUMERIC
    affinity), so its sums carry float noise far below a cent; PostgreSQL's are exact.
    """
    half_quantum = MONEY_QUANTUM / 2
    total = LedgerLine.objects.aggregate(total=Sum("amount"))["total"] or Decimal(0)
    unbalanced = list(
        LedgerLine.objects.values("transaction_id")
        .annotate(total=Sum("amount"))
        .filter(Q(total__gte=half_quantum) | Q(total__lte=-half_quantum))
        .values_list("transaction_id", flat=True)
    )
    sums = {
        account_id: quantize_money(Decimal(total))
        for account_id, total in LedgerLine.objects.values("account_id")
        .annotate(total=Sum("amount"))
        .values_list("account_id", "total")
    }
    mismatches = {
        pk: (balance, sums.get(pk, Decimal(0)))
        for pk, balance in Account.objects.values_list("pk", "balance")
        if balance != sums.get(pk, Decimal(0))
    }
    return LedgerCheck(
        total=quantize_money(Decimal(total)),
        unbalanced_transactions=unbalanced,
        balance_mismatches=mismatches,
    )
