"""The ledger side of applying a re-pricing: `adjustment` transactions, never edits to past postings.

A re-pricing changes what accounted records should have cost. Their usage transactions stay as they
were posted; the difference is posted as new transactions of kind `adjustment`, one per (customer org,
owner org, currency) of the re-pricing, whose lines mirror a usage posting's
(`accounting.usage_posting`): the customer pays −Δamount, the owner receives +Δcost, the platform keeps
Δamount − Δcost. They sum to zero, and a line that would be zero is not written.

Exactly-once: each adjustment's `reference` is derived from the re-pricing and its group, and
(kind, reference) is unique (`ledger_transaction_reference_idempotency`), so posting the same groups
again returns the transactions already there and moves no balance. Locks: the accounts are locked by
`accounting.ledger.lock_accounts`, the ledger's one lock order (primary-key order, one statement).
"""

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from django.db import connection, transaction
from django.utils import timezone

from accounting.ledger import (
    ErrorCode,
    LedgerError,
    accounts_moved,
    apply_deltas,
    check_balances,
    lock_accounts,
)
from accounting.models import Account, LedgerLine, LedgerTransaction, RepricingItem

GroupKey = tuple[str, str, str]  # (userorgid, ownerid, currency)


@dataclass(frozen=True)
class AdjustmentGroup:
    """What a re-pricing changes for one customer, owner and currency: the sums of its records' deltas."""

    userorgid: str
    ownerid: str
    currency: str
    delta_amount: Decimal
    delta_cost: Decimal

    @property
    def key(self) -> GroupKey:
        return (self.userorgid, self.ownerid, self.currency)


def adjustment_reference(repricing_id: int, key: GroupKey) -> str:
    """The idempotency key of a re-pricing's adjustment for one group (orgs can be 64 characters each,
    the reference 128: the group is hashed)."""
    digest = hashlib.sha256("\x1f".join(key).encode()).hexdigest()[:32]
    return f"repricing:{repricing_id}:{digest}"


@transaction.atomic
def ledger_post_repricing(
    *,
    repricing_id: int,
    groups: Sequence[AdjustmentGroup],
    created_by: str = "",
    now: datetime | None = None,
) -> dict[GroupKey, LedgerTransaction]:
    """Post one adjustment transaction per group (once: a group already posted returns its transaction).

    Raises LedgerError(no_account) when a line needs an account that does not exist, and BalanceOverflow
    when a balance would pass the column; nothing is written then. Credit limits and frozen accounts do
    not stop an adjustment: it corrects charges already made, as an operator's `ledger_adjust` does.
    """
    now = now or timezone.now()
    references = {group.key: adjustment_reference(repricing_id, group.key) for group in groups}
    posted = {
        txn.reference: txn
        for txn in LedgerTransaction.objects.filter(
            kind=LedgerTransaction.Kind.ADJUSTMENT, reference__in=references.values()
        )
    }
    todo = [group for group in groups if references[group.key] not in posted]
    accounts = _locked_accounts(todo)
    transactions: list[LedgerTransaction] = []
    lines: list[LedgerLine] = []
    deltas: dict[Account, Decimal] = {}
    for group in todo:
        txn = LedgerTransaction(
            kind=LedgerTransaction.Kind.ADJUSTMENT,
            reference=references[group.key],
            currency=group.currency,
            amount=group.delta_amount,
            memo=f"Re-pricing {repricing_id}: {group.userorgid} / {group.ownerid or '-'}"[:255],
            created_by=created_by[:150],
            created_at=now,
        )
        transactions.append(txn)
        for account, amount in _lines(group, accounts):
            lines.append(LedgerLine(transaction=txn, account=account, amount=amount))
            deltas[account] = deltas.get(account, Decimal(0)) + amount
    check_balances(deltas)
    LedgerTransaction.objects.bulk_create(transactions, batch_size=500)
    LedgerLine.objects.bulk_create(lines, batch_size=500)
    apply_deltas({account.pk: delta for account, delta in deltas.items()}, now)
    posted.update({txn.reference: txn for txn in transactions})
    return {key: posted[reference] for key, reference in references.items()}


def _locked_accounts(groups: Sequence[AdjustmentGroup]) -> dict[tuple[str, str, str], Account]:
    """The accounts the groups' lines move, locked, by (org, kind, currency); the platform's org is ""."""
    customers = {g.userorgid for g in groups if g.delta_amount}
    owners = {g.ownerid for g in groups if g.delta_cost}
    currencies = {g.currency for g in groups if g.delta_amount != g.delta_cost}
    found = {}
    condition = accounts_moved(customers=customers, owners=owners, currencies=currencies)
    for account in lock_accounts(condition):
        org = "" if account.kind == Account.Kind.PLATFORM else account.org
        found[(org, account.kind, account.currency)] = account
    return found


def _lines(
    group: AdjustmentGroup, accounts: dict[tuple[str, str, str], Account]
) -> list[tuple[Account, Decimal]]:
    """customer −Δamount, owner +Δcost, platform Δamount − Δcost; zero lines left out."""
    wanted = (
        (group.userorgid, Account.Kind.CUSTOMER, -group.delta_amount, "userorgid"),
        (group.ownerid, Account.Kind.OWNER, group.delta_cost, "ownerid"),
        ("", Account.Kind.PLATFORM, group.delta_amount - group.delta_cost, ""),
    )
    lines = []
    for org, kind, amount, field in wanted:
        if not amount:
            continue
        account = accounts.get((org, kind, group.currency))
        if account is None:
            if kind == Account.Kind.PLATFORM:
                message = f"There is no platform account in {group.currency}."
            elif not org:
                message = f"Records of {group.userorgid!r} have no {field}: no {kind} account to adjust."
            else:
                message = f"Org {org!r} has no {kind} account in {group.currency}."
            raise LedgerError(ErrorCode.NO_ACCOUNT, message)
        lines.append((account, amount))
    return lines


# --- a re-pricing's items -------------------------------------------------------------------------
# A re-pricing of a month can change millions of records, one item each. On PostgreSQL they go in with
# COPY in text format written by hand, as usage postings do (accounting.usage_posting): bulk_create spent
# more in preparing each value than the database spent storing the row.

ITEM_COLUMNS = (
    "repricing_id",
    "usage_id",
    "transno",
    "userorgid",
    "ownerid",
    "model_name",
    "use_date",
    "currency",
    "treatment",
    "old_amount",
    "new_amount",
    "old_cost",
    "new_cost",
)
_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def repricing_items_insert(rows: Sequence[tuple]) -> None:
    """Write items given as tuples in ITEM_COLUMNS order (no adjustment yet), in the caller's transaction."""
    if not rows:
        return
    if connection.vendor != "postgresql":
        RepricingItem.objects.bulk_create(
            [RepricingItem(**dict(zip(ITEM_COLUMNS, row, strict=True))) for row in rows], batch_size=500
        )
        return
    text = "".join(
        "\t".join(value.translate(_COPY_ESCAPES) if isinstance(value, str) else str(value) for value in row)
        + "\n"
        for row in rows
    )
    connection.ensure_connection()
    names = ", ".join(connection.ops.quote_name(column) for column in ITEM_COLUMNS)
    table = RepricingItem._meta.db_table
    with connection.connection.cursor() as cursor, cursor.copy(f"COPY {table} ({names}) FROM STDIN") as copy:
        copy.write(text)
