"""Ledger services: create accounts, post usage exactly once, top up, adjust.

Every posting writes one `LedgerTransaction` whose lines sum to zero: the customer org pays `amount`,
the owner org receives `cost`, the platform keeps `amount - cost`. A line that would be zero is not
written, and an account is only needed for a line that is written (a platform-served model with cost 0
needs no owner account).

Locks: balances change by F() under row locks on the accounts, always taken in primary-key order in one
statement (`_lock_accounts`), so two postings that touch the same accounts queue instead of
deadlocking. This module is the only place that locks accounts.

Exactly-once: the `ledger_transaction_usage_idempotency` unique constraint. Callers hold the usage rows
locked while they post; the constraint is what holds even if a caller gets that wrong.
"""

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any
from uuid import UUID

from django.core.exceptions import ValidationError
from django.db import IntegrityError, connection, transaction
from django.db.models import Case, F, Q, Sum, Value, When
from django.utils import timezone
from uuid_utils import uuid7 as uuid7_fast

from accounting.models import (
    Account,
    AccountingFailure,
    LedgerLine,
    LedgerTransaction,
    validate_time_zone,
)
from core.money import MONEY_DIGITS, MONEY_PLACES, MONEY_QUANTUM, quantize_money

ErrorCode = AccountingFailure.ErrorCode


class LedgerError(Exception):
    """A posting or transfer the ledger refuses; `error_code` is one of AccountingFailure.ErrorCode."""

    def __init__(self, error_code: str, message: str) -> None:
        super().__init__(message)
        self.error_code = error_code
        self.message = message


class AccountExists(Exception):
    """create_account for an (org, kind) that already has an account."""


# The largest balance the column holds (Decimal(18,5)): 9,999,999,999,999.99999 either way.
MAX_BALANCE = Decimal(10) ** (MONEY_DIGITS - MONEY_PLACES) - MONEY_QUANTUM


class BalanceOverflow(ValueError):
    """A transfer would take a balance past what the balance column holds (MAX_BALANCE)."""


@dataclass(frozen=True)
class UsagePosting:
    """What the ledger needs of a usage record: plain values, never the llmlog model."""

    usage_id: UUID
    transno: str
    userorgid: str
    ownerid: str
    amount: Decimal | None
    cost: Decimal | None
    currency: str


class Outcome(StrEnum):
    POSTED = "posted"
    ALREADY_POSTED = "already_posted"  # a transaction exists: nothing written, the record is accounted
    SKIPPED = "skipped"  # nothing billable: no transaction
    FAILED = "failed"


@dataclass(frozen=True)
class PostingResult:
    usage_id: UUID
    outcome: Outcome
    error_code: str = ""
    message: str = ""


# --- accounts -------------------------------------------------------------------------------------


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


def _lock_accounts(condition: Q) -> list[Account]:
    """Lock the accounts matching `condition`, in primary-key order: the one lock order of the ledger."""
    return list(Account.objects.select_for_update().filter(condition).order_by("pk"))


def account_lock(*, account_id: int) -> Account:
    """Lock one account until the caller's transaction ends: no line of it commits meanwhile, since every
    writer of lines holds the locks of their accounts (a period close reads its last line id so)."""
    (account,) = _lock_accounts(Q(pk=account_id))
    return account


def _apply_deltas(deltas: dict[int, Decimal], now: datetime) -> None:
    """balance = balance + delta for every account, in one UPDATE (the callers hold the locks)."""
    deltas = {pk: delta for pk, delta in deltas.items() if delta}
    if not deltas:
        return
    delta_of = Case(
        *(When(pk=pk, then=Value(delta)) for pk, delta in sorted(deltas.items())),
        output_field=Account._meta.get_field("balance"),
    )
    Account.objects.filter(pk__in=deltas).update(balance=F("balance") + delta_of, updated_at=now)


# --- posting usage --------------------------------------------------------------------------------


def ledger_post_usage(
    *,
    usage_id: UUID,
    transno: str,
    userorgid: str,
    ownerid: str,
    amount: Decimal | None,
    cost: Decimal | None,
    currency: str,
    now: datetime | None = None,
) -> PostingResult:
    """Post one usage record. Returns POSTED, ALREADY_POSTED or SKIPPED; raises LedgerError otherwise."""
    usage = UsagePosting(
        usage_id=usage_id,
        transno=transno,
        userorgid=userorgid,
        ownerid=ownerid,
        amount=amount,
        cost=cost,
        currency=currency,
    )
    (result,) = ledger_post_usage_batch(usages=[usage], now=now)
    if result.outcome == Outcome.FAILED:
        raise LedgerError(result.error_code, result.message)
    return result


@transaction.atomic
def ledger_post_usage_batch(
    *, usages: Sequence[UsagePosting], now: datetime | None = None, check_posted: bool = True
) -> list[PostingResult]:
    """Post many usage records in one database transaction, each one succeeding or failing on its own.

    The accounts involved are locked once for the whole batch (in primary-key order), each record is
    checked against the balances as the records before it left them, and the transactions, lines and
    balance changes of the records that pass are written with a few set-based statements. A record
    that fails (no account, frozen, insufficient balance, no price) writes nothing and does not stop
    the others. An unexpected database error (e.g. the unique constraint) raises and rolls back the
    whole batch: the caller then posts the records one by one.

    `check_posted`: look up which records already have a transaction (ALREADY_POSTED). A caller that
    holds the records locked as `pending` may skip the look-up: the unique constraint still refuses a
    second posting, by raising.
    """
    now = now or timezone.now()
    results: dict[UUID, PostingResult] = {}
    posted_before = (
        set(
            LedgerTransaction.objects.filter(usage_id__in=[u.usage_id for u in usages]).values_list(
                "usage_id", flat=True
            )
        )
        if check_posted
        else set()
    )
    billable: list[UsagePosting] = []
    for usage in usages:
        if usage.usage_id in posted_before:
            results[usage.usage_id] = PostingResult(usage.usage_id, Outcome.ALREADY_POSTED)
        elif usage.amount is None or usage.cost is None:
            missing = "amount" if usage.amount is None else "cost"
            results[usage.usage_id] = _failed(
                usage,
                ErrorCode.NO_PRICE,
                f"The record has no {missing}: no price for its model at its use_time.",
            )
        elif usage.amount < 0 or usage.cost < 0:
            results[usage.usage_id] = _failed(
                usage, ErrorCode.INTERNAL, "amount and cost must not be negative."
            )
        elif usage.amount == 0 and usage.cost == 0:
            results[usage.usage_id] = PostingResult(usage.usage_id, Outcome.SKIPPED)
        else:
            billable.append(usage)

    if billable:
        book = _AccountBook(_lock_accounts(_accounts_needed(billable)))
        transactions: list[tuple] = []
        lines: list[tuple[str, int, Decimal]] = []
        deltas: dict[int, Decimal] = defaultdict(Decimal)
        posted = Outcome.POSTED  # looked up once: this loop runs for every record
        for usage in billable:
            try:
                usage_lines = book.lines_for(usage)
            except LedgerError as exc:
                results[usage.usage_id] = _failed(usage, exc.error_code, exc.message)
                continue
            transaction_id = str(uuid7_fast())
            transactions.append((transaction_id, usage.usage_id, usage.transno, usage.currency, usage.amount))
            for account, amount in usage_lines:
                lines.append((transaction_id, account.id, amount))
                deltas[account.id] += amount
            results[usage.usage_id] = PostingResult(usage.usage_id, posted)
        _insert_usage_transactions(transactions, now)
        _insert_lines(lines)
        _apply_deltas(deltas, now)
    return [results[usage.usage_id] for usage in usages]


def _failed(usage: UsagePosting, error_code: str, message: str) -> PostingResult:
    return PostingResult(usage.usage_id, Outcome.FAILED, error_code=error_code, message=message)


def _accounts_needed(usages: Iterable[UsagePosting]) -> Q:
    customers, owners, currencies = set(), set(), set()
    for usage in usages:
        if usage.amount:
            customers.add(usage.userorgid)
        if usage.cost:
            owners.add(usage.ownerid)
        if usage.amount != usage.cost:
            currencies.add(usage.currency)
    condition = Q(pk__in=[])
    if customers:
        condition |= Q(kind=Account.Kind.CUSTOMER, org__in=customers)
    if owners:
        condition |= Q(kind=Account.Kind.OWNER, org__in=owners)
    if currencies:
        condition |= Q(kind=Account.Kind.PLATFORM, currency__in=currencies)
    return condition


class _AccountBook:
    """The locked accounts of a batch, with the balances as the records posted so far leave them."""

    def __init__(self, accounts: list[Account]) -> None:
        self.by_org_kind = {(a.org, a.kind): a for a in accounts if a.kind != Account.Kind.PLATFORM}
        self.platform = {a.currency: a for a in accounts if a.kind == Account.Kind.PLATFORM}
        self.balance = {a.id: a.balance for a in accounts}

    def lines_for(self, usage: UsagePosting) -> list[tuple[Account, Decimal]]:
        """The lines that post `usage`, or LedgerError; on success the running balances move."""
        assert usage.amount is not None and usage.cost is not None
        lines: list[tuple[Account, Decimal]] = []
        if usage.amount:
            customer = self._account(usage.userorgid, Account.Kind.CUSTOMER, usage, "userorgid")
            lines.append((customer, -usage.amount))
        if usage.cost:
            owner = self._account(usage.ownerid, Account.Kind.OWNER, usage, "ownerid")
            lines.append((owner, usage.cost))
        margin = usage.amount - usage.cost
        if margin:
            platform = self.platform.get(usage.currency)
            if platform is None:
                raise LedgerError(ErrorCode.NO_ACCOUNT, f"There is no platform account in {usage.currency}.")
            lines.append((platform, margin))
        for account, _ in lines:
            if account.status == Account.Status.FROZEN:
                raise LedgerError(
                    ErrorCode.ACCOUNT_FROZEN, f"The {account.kind} account of {account.org!r} is frozen."
                )
        if usage.amount:
            customer = lines[0][0]
            after = self.balance[customer.id] - usage.amount
            if after < -customer.credit_limit:
                raise LedgerError(
                    ErrorCode.INSUFFICIENT_BALANCE,
                    f"Org {customer.org!r} has a balance of {self.balance[customer.id]} {customer.currency} "
                    f"and a credit limit of {customer.credit_limit}: it cannot pay {usage.amount}.",
                )
        for account, amount in lines:
            self.balance[account.id] += amount
        return lines

    def _account(self, org: str, kind: str, usage: UsagePosting, field: str) -> Account:
        if not org:
            raise LedgerError(
                ErrorCode.NO_ACCOUNT, f"The record has no {field}: no {kind} account to post to."
            )
        account = self.by_org_kind.get((org, kind))
        if account is None:
            raise LedgerError(ErrorCode.NO_ACCOUNT, f"Org {org!r} has no {kind} account.")
        if account.currency != usage.currency:
            raise LedgerError(
                ErrorCode.NO_ACCOUNT,
                f"Org {org!r} has a {kind} account in {account.currency}, not in {usage.currency}.",
            )
        return account


# --- writing --------------------------------------------------------------------------------------
# On PostgreSQL the rows go in with COPY in text format, written by hand: at one transaction and
# three lines per usage record this is the posting's hot path, and psycopg's per-value dumping
# (write_row) cost more than the database's side of the COPY.

_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def _insert_usage_transactions(rows: list[tuple], now: datetime) -> None:
    """rows: (id, usage_id, transno, currency, amount)."""
    if not rows:
        return
    kind = LedgerTransaction.Kind.USAGE.value
    if connection.vendor != "postgresql":
        LedgerTransaction.objects.bulk_create(
            [
                LedgerTransaction(
                    id=pk,
                    kind=kind,
                    usage_id=usage_id,
                    reference=transno,
                    currency=currency,
                    amount=amount,
                    created_at=now,
                )
                for pk, usage_id, transno, currency, amount in rows
            ],
            batch_size=500,
        )
        return
    created_at = now.isoformat()
    text = "".join(
        f"{pk}\t{kind}\t{usage_id}\t{transno.translate(_COPY_ESCAPES)}\t{currency.translate(_COPY_ESCAPES)}"
        f"\t{amount}\t\t\t{created_at}\n"
        for pk, usage_id, transno, currency, amount in rows
    )
    _copy(LedgerTransaction._meta.db_table, _TRANSACTION_COLUMNS, text)


_TRANSACTION_COLUMNS = (
    "id",
    "kind",
    "usage_id",
    "reference",
    "currency",
    "amount",
    "memo",
    "created_by",
    "created_at",
)


def _insert_lines(rows: list[tuple[str, int, Decimal]]) -> None:
    if not rows:
        return
    if connection.vendor != "postgresql":
        LedgerLine.objects.bulk_create(
            [LedgerLine(transaction_id=t, account_id=a, amount=amount) for t, a, amount in rows],
            batch_size=500,
        )
        return
    text = "".join(
        f"{transaction_id}\t{account_id}\t{amount}\n" for transaction_id, account_id, amount in rows
    )
    _copy(LedgerLine._meta.db_table, ("transaction_id", "account_id", "amount"), text)


def _copy(table: str, columns: Sequence[str], text: str) -> None:
    """COPY on Django's own connection (inside the caller's transaction): the fastest bulk insert."""
    connection.ensure_connection()
    names = ", ".join(connection.ops.quote_name(c) for c in columns)
    with connection.connection.cursor() as cursor, cursor.copy(f"COPY {table} ({names}) FROM STDIN") as copy:
        copy.write(text)


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
            locked = {a.pk: a for a in _lock_accounts(Q(pk__in=[account.pk, external.pk]))}
            _check_balances({locked[account.pk]: amount, locked[external.pk]: -amount})
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
            _apply_deltas({account.pk: amount, external.pk: -amount}, now)
    except IntegrityError:
        # The same reference, committed by a concurrent request between our look-up and our insert.
        existing = _same_reference(kind_of_transaction, reference, org, amount) if reference else None
        if existing is None:
            raise
        return existing, False
    return txn, True


def _check_balances(deltas: dict[Account, Decimal]) -> None:
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
