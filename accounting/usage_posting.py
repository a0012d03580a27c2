"""Posting usage: each usage record into the ledger exactly once, a batch at a time.

Every posting writes one `LedgerTransaction` whose lines sum to zero: the customer org pays `amount`,
the owner org receives `cost`, the platform keeps `amount - cost`. A line that would be zero is not
written, and an account is only needed for a line that is written (a platform-served model with cost 0
needs no owner account).

A batch is posted set-based: its accounts are locked once (`accounting.ledger.lock_accounts`, the
ledger's one lock order), each record is checked against the balances as the records before it left
them, and the rows of the records that pass go in with a few statements (COPY on PostgreSQL).

Exactly-once: the `ledger_transaction_usage_idempotency` unique constraint. Callers hold the usage rows
locked while they post; the constraint is what holds even if a caller gets that wrong.
"""

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from uuid import UUID

from django.db import connection, transaction
from django.db.models import Q
from django.utils import timezone
from uuid_utils import uuid7 as uuid7_fast

from accounting.ledger import ErrorCode, LedgerError, accounts_moved, apply_deltas, lock_accounts
from accounting.models import Account, LedgerLine, LedgerTransaction


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
    posted_before = _posted_before(usages) if check_posted else set()
    results, billable = _settle_unbillable(usages, posted_before)
    if billable:
        results.update(_post_billable(billable, now))
    return [results[usage.usage_id] for usage in usages]


def _posted_before(usages: Sequence[UsagePosting]) -> set[UUID]:
    """The usage ids among `usages` that already have a transaction."""
    return set(
        LedgerTransaction.objects.filter(usage_id__in=[u.usage_id for u in usages]).values_list(
            "usage_id", flat=True
        )
    )


def _settle_unbillable(
    usages: Sequence[UsagePosting], posted_before: set[UUID]
) -> tuple[dict[UUID, PostingResult], list[UsagePosting]]:
    """The results of the records settled without touching an account (already posted, unpriced,
    negative, nothing to charge), and the billable rest in their order."""
    results: dict[UUID, PostingResult] = {}
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
    return results, billable


def _post_billable(billable: list[UsagePosting], now: datetime) -> dict[UUID, PostingResult]:
    """Lock the accounts the records need, check each record against the running balances, and write
    the transactions, lines and balance changes of those that pass (set-based: a few statements)."""
    book = _AccountBook(lock_accounts(_accounts_needed(billable)))
    results: dict[UUID, PostingResult] = {}
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
    apply_deltas(deltas, now)
    return results


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
    return accounts_moved(customers=customers, owners=owners, currencies=currencies)


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
