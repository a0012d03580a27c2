"""Holds: reserve a call's worst case before it is made; the call's usage record settles it.

Admission (`hold_grant`) is safe under any concurrency on PostgreSQL: in one transaction it locks the
org's customer account and then every blocking budget in the call's scope (accounts before budgets,
each in primary-key order: the one lock order of admission; posting locks accounts only), reads what
each has spent and holds in ONE statement, checks, and inserts the hold before the locks go. Two
admissions for the same org queue on the account row, so the second sees the first's hold: a blocking
budget is never exceeded by the holds it admitted, whatever their number. Reading spent and held in
one statement matters: under READ COMMITTED two statements may see two moments, and a posting that
commits between them would be missed twice over (its hold gone, its amount not yet seen).

The account rule: balance - active holds >= -credit_limit. A budget's rule: spent (every record of
the period in scope, `accounting.budgets`) + active holds in scope + the new hold <= limit. A hold
counts until its record is posted (the balance moves then) or it expires: between ingest and posting
a call counts twice, which can refuse a call for a few seconds but never admits one too many.

Settlement (`holds_settle`) runs in the posting's transaction (and in ingest's for records filed as
skipped): the hold ends when its record's money is on the books. A hold past `expires_at` stops
counting at once; `holds_expire` only marks it for the admin.
"""

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import Q
from django.utils import timezone

from accounting.budgets import in_scope, period_bounds
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
    existing = Hold.objects.filter(org=request.org, transno=request.transno).first()
    if existing is not None:
        return _same_hold(existing, request, amount), False
    try:
        with transaction.atomic():
            return _grant_locked(request, amount, ttl, now), True
    except IntegrityError:  # the same transno, granted concurrently
        existing = Hold.objects.filter(org=request.org, transno=request.transno).first()
        if existing is None:
            raise
        return _same_hold(existing, request, amount), False


def _same_hold(existing: Hold, request: HoldRequest, amount: Decimal) -> Hold:
    scope = ("userid", "token_name", "model_name", "feature")
    if existing.amount != amount or any(getattr(existing, f) != getattr(request, f) for f in scope):
        raise HoldConflict(
            f"transno: {request.transno!r} already has a hold of {existing.amount} ({existing.status}) "
            "for another amount or scope"
        )
    return existing


def _grant_locked(request: HoldRequest, amount: Decimal, ttl: int, now: datetime) -> Hold:
    account = (
        Account.objects.select_for_update()
        .filter(org=request.org, kind=Account.Kind.CUSTOMER)
        .only("id", "org", "currency", "balance", "credit_limit", "status")
        .first()
    )
    if account is None:
        raise HoldRefused(
            "insufficient_balance",
            f"Org {request.org!r} has no customer account: nothing to reserve against.",
            remaining=Decimal(0),
        )
    if account.status == Account.Status.FROZEN:
        raise HoldRefused(
            "insufficient_balance",
            f"The customer account of {request.org!r} is frozen.",
            remaining=Decimal(0),
        )
    budgets = [
        budget
        for budget in Budget.objects.select_for_update()
        .filter(org=request.org, action=Budget.Action.BLOCK)
        .order_by("pk")
        if in_scope(
            budget,
            userid=request.userid,
            token_name=request.token_name,
            model_name=request.model_name,
            feature=request.feature,
        )
    ]
    periods = {b.pk: period_bounds(period=b.period, time_zone=b.time_zone, at=now)[0] for b in budgets}
    balance, account_held, spent, holds = _read_room(account, periods, now)

    room = balance - account_held + account.credit_limit
    if amount > room:
        raise HoldRefused(
            "insufficient_balance",
            f"Org {request.org!r} has {room} {account.currency} to spend (balance {balance}, held "
            f"{account_held}, credit limit {account.credit_limit}): it cannot reserve {amount}.",
            remaining=room,
        )
    for budget in budgets:
        held = sum(
            (
                held_amount
                for userid, token_name, model_name, feature, held_amount in holds
                if in_scope(
                    budget, userid=userid, token_name=token_name, model_name=model_name, feature=feature
                )
            ),
            Decimal(0),
        )
        remaining = budget.limit - spent.get(budget.pk, Decimal(0)) - held
        if amount > remaining:
            raise HoldRefused(
                "budget_exceeded",
                f"Budget {budget.pk} ({budget}) has {max(remaining, Decimal(0))} of {budget.limit} left "
                f"this {budget.period}: it cannot reserve {amount}.",
                budget=budget.pk,
                remaining=quantize_money(remaining),
            )
    return Hold.objects.create(
        org=request.org,
        transno=request.transno,
        userid=request.userid,
        token_name=request.token_name,
        model_name=request.model_name,
        feature=request.feature,
        amount=amount,
        currency=account.currency,
        created_at=now,
        expires_at=now + timedelta(seconds=ttl),
        created_by=request.created_by[:150],
    )


def _read_room(
    account: Account, periods: dict[int, datetime], now: datetime
) -> tuple[Decimal, Decimal, dict[int, Decimal], list[tuple]]:
    """The account's balance, its active holds and each budget's counter, as of one moment.

    One statement on PostgreSQL (a UNION ALL of the three reads); on SQLite, whose single writer holds
    the database for the whole transaction, three plain reads see the same moment anyway."""
    if connection.vendor != "postgresql":
        balance = Account.objects.values_list("balance", flat=True).get(pk=account.pk)
        holds = list(
            Hold.objects.filter(org=account.org, status=Hold.Status.ACTIVE, expires_at__gt=now).values_list(
                "userid", "token_name", "model_name", "feature", "amount"
            )
        )
        condition = Q(pk__in=[])
        for budget_id, start in periods.items():
            condition |= Q(budget_id=budget_id, period_start=start)
        spent = dict(BudgetSpend.objects.filter(condition).values_list("budget_id", "spent"))
        return balance, sum((h[4] for h in holds), Decimal(0)), spent, holds
    sql = [
        "SELECT 'a', NULL::bigint, NULL, NULL, NULL, NULL, balance FROM accounting_account WHERE id = %s",
        "UNION ALL SELECT 'h', NULL, userid, token_name, model_name, feature, amount FROM accounting_hold "
        "WHERE org = %s AND status = 'active' AND expires_at > %s",
    ]
    params: list = [account.pk, account.org, now]
    if periods:
        pairs = ", ".join(["(%s::bigint, %s::timestamptz)"] * len(periods))
        sql.append(
            "UNION ALL SELECT 's', s.budget_id, NULL, NULL, NULL, NULL, s.spent "
            f"FROM accounting_budget_spend s WHERE (s.budget_id, s.period_start) IN (VALUES {pairs})"
        )
        for budget_id, start in periods.items():
            params += [budget_id, start]
    balance, spent, holds = Decimal(0), {}, []
    with connection.cursor() as cursor:
        cursor.execute(" ".join(sql), params)
        for kind, budget_id, userid, token_name, model_name, feature, value in cursor.fetchall():
            if kind == "a":
                balance = value
            elif kind == "h":
                holds.append((userid, token_name, model_name, feature, value))
            else:
                spent[budget_id] = value
    return balance, sum((h[4] for h in holds), Decimal(0)), spent, holds


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
