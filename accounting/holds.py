"""Holds: reserve a call's worst case before it is made; the call's usage record settles it.

Admission (`hold_grant`) is safe under any concurrency on PostgreSQL: in one transaction it locks the
org's customer account, then reads in ONE statement everything it decides on (the balance, whether the
transno has a hold, the active holds, the org's blocking budgets with their limits and counters),
checks, and inserts the hold before the lock goes. Two admissions for the same org queue on the account
row, so the second sees the first's hold: a blocking budget is never exceeded by the holds it admitted,
whatever their number. One statement after the lock matters: under READ COMMITTED two statements may
see two moments (a posting that commits between them would be missed twice over: its hold gone, its
amount not yet seen), and a statement that began before the lock was granted would not see the hold
its predecessor just committed. The lock and the read travel in one pipeline: an admission is three
round trips (lock and read, insert, commit), and the lock is held for all three.

The account rule: balance - active holds >= -credit_limit. A budget's rule: spent (every record of
the period in scope, `accounting.budgets`) + active holds in scope + the new hold <= limit. A hold
counts until its record is posted (the balance moves then) or it expires: between ingest and posting
a call counts twice, which can refuse a call for a few seconds but never admits one too many.

Settlement (`holds_settle`) runs in the posting's transaction (and in ingest's for records filed as
skipped): the hold ends when its record's money is on the books. A hold past `expires_at` stops
counting at once; `holds_expire` only marks it for the admin.
"""

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import Q, Sum
from django.utils import timezone

from accounting.budgets import TOTAL_PERIOD_START, in_scope, period_bounds
from accounting.models import Account, Budget, BudgetSpend, Hold
from core.money import quantize_money

MAX_TTL_SECONDS = 24 * 3600


class HoldRefused(Exception):
    """402: the account or a blocking budget has no room. `code`: insufficient_balance | budget_exceeded."""

    def __init__(self, code: str, detail: str, *, budget: int | None = None, remaining: Decimal) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail
        self.budget = budget
        self.remaining = remaining


class HoldConflict(Exception):
    """The transno already has a hold of another amount or scope (409)."""


@dataclass(frozen=True)
class HoldRequest:
    org: str
    transno: str
    amount: Decimal
    userid: str = ""
    token_name: str = ""
    model_name: str = ""
    feature: str = ""
    ttl_seconds: int | None = None
    created_by: str = ""


def default_ttl() -> int:
    return settings.LLMLOG_HOLD_TTL_SECONDS


def hold_grant(*, request: HoldRequest, now: datetime | None = None) -> tuple[Hold, bool]:
    """Grant a hold or raise HoldRefused. Returns (hold, created): the same transno again returns the
    hold it has (HoldConflict when the request differs)."""
    now = now or timezone.now()
    amount = quantize_money(request.amount)
    if amount < 0:
        raise ValueError("amount: must not be negative")
    ttl = request.ttl_seconds if request.ttl_seconds is not None else default_ttl()
    if not 1 <= ttl <= MAX_TTL_SECONDS:
        raise ValueError(f"ttl_seconds: from 1 to {MAX_TTL_SECONDS}")
    try:
        with transaction.atomic():
            hold = _grant_locked(request, amount, ttl, now)
    except IntegrityError:  # the same transno, granted concurrently
        hold = None
    if hold is not None:
        return hold, True
    existing = Hold.objects.filter(org=request.org, transno=request.transno).first()
    if existing is None:
        raise IntegrityError(f"transno: the hold of {request.transno!r} could neither be made nor found")
    return _same_hold(existing, request, amount), False


def _same_hold(existing: Hold, request: HoldRequest, amount: Decimal) -> Hold:
    scope = ("userid", "token_name", "model_name", "feature")
    if existing.amount != amount or any(getattr(existing, f) != getattr(request, f) for f in scope):
        raise HoldConflict(
            f"transno: {request.transno!r} already has a hold of {existing.amount} ({existing.status}) "
            "for another amount or scope"
        )
    return existing


@dataclass
class _Room:
    """What admission reads under the account's lock, as of one moment."""

    currency: str
    credit_limit: Decimal
    status: str
    balance: Decimal
    exists: bool  # the transno has a hold already
    budgets: list[Budget]  # the org's blocking budgets, limits as of now
    spent: dict[tuple[int, datetime], Decimal]  # (budget, period start) -> counter
    # Active holds summed by scope: (userid, token_name, model_name, feature, amount). A gateway with
    # thousands of calls in flight has a few scopes, so admission's Python work stays small. SQLite's
    # sums are not exact decimals: the sums of these are quantized to the money scale where used.
    holds: list[tuple]


def _grant_locked(request: HoldRequest, amount: Decimal, ttl: int, now: datetime) -> Hold | None:
    """The new hold, or None when the transno has one already (the caller returns that one)."""
    room = _lock_and_read(request, now)
    if room is None:
        raise HoldRefused(
            "insufficient_balance",
            f"Org {request.org!r} has no customer account: nothing to reserve against.",
            remaining=Decimal(0),
        )
    if room.exists:
        return None
    if room.status == Account.Status.FROZEN:
        raise HoldRefused(
            "insufficient_balance",
            f"The customer account of {request.org!r} is frozen.",
            remaining=Decimal(0),
        )
    account_held = quantize_money(sum((h[4] for h in room.holds), Decimal(0)))
    available = room.balance - account_held + room.credit_limit
    if amount > available:
        raise HoldRefused(
            "insufficient_balance",
            f"Org {request.org!r} has {available} {room.currency} to spend (balance {room.balance}, held "
            f"{account_held}, credit limit {room.credit_limit}): it cannot reserve {amount}.",
            remaining=available,
        )
    scope = {name: getattr(request, name) for name in Budget.SCOPE_FIELDS}
    for budget in room.budgets:
        if in_scope(budget, **scope):
            _check_budget(budget, amount, room, now)
    return Hold.objects.create(
        org=request.org,
        transno=request.transno,
        amount=amount,
        currency=room.currency,
        created_at=now,
        expires_at=now + timedelta(seconds=ttl),
        created_by=request.created_by[:150],
        **scope,
    )


def _check_budget(budget: Budget, amount: Decimal, room: _Room, now: datetime) -> None:
    start = period_bounds(period=budget.period, time_zone=budget.time_zone, at=now)[0]
    held = quantize_money(
        sum(
            (
                held_amount
                for userid, token_name, model_name, feature, held_amount in room.holds
                if in_scope(
                    budget, userid=userid, token_name=token_name, model_name=model_name, feature=feature
                )
            ),
            Decimal(0),
        )
    )
    remaining = budget.limit - room.spent.get((budget.pk, start), Decimal(0)) - held
    if amount > remaining:
        raise HoldRefused(
            "budget_exceeded",
            f"Budget {budget.pk} ({budget}) has {max(remaining, Decimal(0))} of {budget.limit} left "
            f"this {budget.period}: it cannot reserve {amount}.",
            budget=budget.pk,
            remaining=quantize_money(remaining),
        )


# The counters admission reads: every period that can be current now (a month is at most 31 days, plus
# an hour when a time zone leaves summer time) and the `total` period's. Which one is current is
# decided in Python (`period_bounds`), once the budgets are read under the lock.
_COUNTER_WINDOW = timedelta(days=32)
_BUDGET_COLUMNS = ("id", "name", "limit", "period", "time_zone", *Budget.SCOPE_FIELDS)


def _lock_and_read(request: HoldRequest, now: datetime) -> _Room | None:
    """Lock the org's customer account, then read everything admission decides on as of one moment
    after the lock: None when the org has no customer account.

    On PostgreSQL two statements sent together in a pipeline (one round trip): the lock, then ONE
    read, so that under READ COMMITTED it sees one snapshot, taken once the lock is ours. On SQLite,
    whose single writer holds the database for the whole transaction, plain reads see that moment."""
    if connection.vendor != "postgresql":
        return _lock_and_read_portable(request, now)
    org, since = request.org, now - _COUNTER_WINDOW
    connection.ensure_connection()
    with connection.cursor() as lock, connection.cursor() as read, connection.connection.pipeline():
        lock.execute(
            "SELECT 1 FROM accounting_account WHERE org = %s AND kind = 'customer' FOR UPDATE", [org]
        )
        read.execute(
            _ROOM_SQL,
            {"org": org, "transno": request.transno, "now": now, "total": TOTAL_PERIOD_START, "since": since},
        )
        row = read.fetchone()
    if row is None:
        return None
    currency, credit_limit, status, balance, exists, budgets, holds, counters = row
    return _Room(
        currency=currency,
        credit_limit=credit_limit,
        status=status,
        balance=balance,
        exists=exists,
        budgets=[Budget(org=org, **dict(zip(_BUDGET_COLUMNS, b, strict=True))) for b in _json(budgets)],
        spent={(b, datetime.fromtimestamp(float(start), UTC)): value for b, start, value in _json(counters)},
        holds=[tuple(h) for h in _json(holds)],
    )


def _json(text: str) -> list:
    return json.loads(text, parse_float=Decimal)  # money exact; ids stay int


# One statement, one snapshot: the account, whether the transno has a hold, the active holds by scope, the
# blocking budgets and their counters that can be current. Arrays travel as JSON text, numbers exact.
_ROOM_SQL = """
SELECT a.currency, a.credit_limit, a.status, a.balance,
  EXISTS (SELECT 1 FROM accounting_hold WHERE org = %(org)s AND transno = %(transno)s),
  (SELECT coalesce(json_agg(json_build_array(id, name, "limit", period, time_zone, userid, token_name,
      model_name, feature) ORDER BY id), '[]')::text
     FROM accounting_budget WHERE org = %(org)s AND action = 'block'),
  (SELECT coalesce(json_agg(json_build_array(userid, token_name, model_name, feature, held)), '[]')::text
     FROM (SELECT userid, token_name, model_name, feature, sum(amount) AS held
             FROM accounting_hold WHERE org = %(org)s AND status = 'active' AND expires_at > %(now)s
            GROUP BY userid, token_name, model_name, feature) AS held_by_scope),
  (SELECT coalesce(json_agg(json_build_array(s.budget_id, extract(epoch FROM s.period_start), s.spent)),
      '[]')::text
     FROM accounting_budget_spend s JOIN accounting_budget b ON b.id = s.budget_id
     WHERE b.org = %(org)s AND b.action = 'block'
       AND (s.period_start = %(total)s OR s.period_start BETWEEN %(since)s AND %(now)s))
FROM accounting_account a WHERE a.org = %(org)s AND a.kind = 'customer'
"""


def _lock_and_read_portable(request: HoldRequest, now: datetime) -> _Room | None:
    org = request.org
    account = (
        Account.objects.select_for_update()
        .filter(org=org, kind=Account.Kind.CUSTOMER)
        .values_list("currency", "credit_limit", "status", "balance")
        .first()
    )
    if account is None:
        return None
    budgets = list(
        Budget.objects.filter(org=org, action=Budget.Action.BLOCK).order_by("pk").only(*_BUDGET_COLUMNS)
    )
    counters = BudgetSpend.objects.filter(
        Q(period_start=TOTAL_PERIOD_START) | Q(period_start__range=(now - _COUNTER_WINDOW, now)),
        budget__in=budgets,
    ).values_list("budget_id", "period_start", "spent")
    return _Room(
        *account,
        exists=Hold.objects.filter(org=org, transno=request.transno).exists(),
        budgets=budgets,
        spent={(budget_id, start): value for budget_id, start, value in counters},
        holds=list(
            Hold.objects.filter(org=org, status=Hold.Status.ACTIVE, expires_at__gt=now)
            .values_list(*Budget.SCOPE_FIELDS)
            .order_by()
            .annotate(held=Sum("amount"))
        ),
    )


def hold_release(*, hold: Hold, now: datetime | None = None) -> Hold:
    """End an active hold now (the call was not made). An ended hold is returned as it is."""
    now = now or timezone.now()
    Hold.objects.filter(pk=hold.pk, status=Hold.Status.ACTIVE).update(
        status=Hold.Status.RELEASED, ended_at=now
    )
    hold.refresh_from_db()
    return hold


def holds_settle(*, keys: Iterable[tuple[str, str]], now: datetime | None = None) -> int:
    """End the active holds of these (userorgid, transno): their records are posted, failed or skipped.
    Call it in the transaction that records that. Returns how many ended."""
    keys = sorted(set(keys))
    if not keys:
        return 0
    now = now or timezone.now()
    by_org: dict[str, list[str]] = {}
    for org, transno in keys:
        by_org.setdefault(org, []).append(transno)
    # One clause per org (a posting batch is a few orgs): a clause per record would pass SQLite's
    # expression depth at a thousand records.
    condition = Q(pk__in=[])
    for org, transnos in by_org.items():
        condition |= Q(org=org, transno__in=transnos)
    # An expired hold settled by its late record ends as settled: its money is on the books now.
    return Hold.objects.filter(condition, status=Hold.Status.ACTIVE).update(
        status=Hold.Status.SETTLED, ended_at=now
    )


def holds_expire(*, now: datetime | None = None) -> int:
    """Mark active holds past their expiry as expired (they stopped counting at expires_at already)."""
    now = now or timezone.now()
    return Hold.objects.filter(status=Hold.Status.ACTIVE, expires_at__lte=now).update(
        status=Hold.Status.EXPIRED, ended_at=now
    )
