"""Monthly statements of customer accounts: closing a month into an immutable snapshot.

A month is the org's (`Account.time_zone`). Closing it writes one `Statement` per account and month:
opening balance, charges (usage), top-ups, adjustments (operators' and re-pricing), closing balance, and
the breakdowns by model and by day that the caller's `breakdown` builds (the ledger knows usage only by
id; llmlog joins the lines to the records, since this app never imports llmlog).

Which lines a month counts. A line's transaction has a `created_at`, but a posting stamped 23:59:59
may commit after the close has read the month: counting by created_at alone would miss it for good or
change a closed statement. So the close takes the account's lock (every writer of lines holds it until
commit, accounting.ledger) and reads the account's highest line id, W. The month's cover is "created
before the month's end AND id <= W"; the statement counts its cover minus the previous statement's.
A line committed after the close has an id above W, whatever its created_at, so it falls in the next
open month, exactly once; a late record (November's, posted in December) is December's charge.

The close checks what it writes against the ledger and refuses a month that does not balance: the
movements (charges, top-ups, adjustments) must be the month's lines' sum, and the previous closing balance
plus every line since (this month's and the next month's early ones) must be the account's balance under
its lock. So each close reads about a month of lines (from the previous statement's
`carried_from_line_id`, through the (account, id) index), not the account's whole history; the first
statement of an account reads its earlier lines once, for its opening balance.
"""

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time
from decimal import Decimal
from enum import StrEnum
from typing import Any
from zoneinfo import ZoneInfo

from django.db import transaction
from django.db.models import Count, Max, Min, Q, QuerySet, Sum
from django.utils import timezone

from accounting.accounts import account_lock
from accounting.budgets import zone_of
from accounting.models import Account, LedgerLine, LedgerTransaction, Statement
from core.money import quantize_money

MONTH_PATTERN = re.compile(r"(\d{4})-(\d{2})")


class StatementRefused(Exception):
    """A month that may not close (not ended, out of order) or that does not balance."""


def parse_month(text: str) -> date:
    """ "2026-11" -> date(2026, 11, 1), or ValueError naming `month`."""
    match = MONTH_PATTERN.fullmatch(text.strip()) if isinstance(text, str) else None
    if match is None or not 1 <= int(match[2]) <= 12 or int(match[1]) < 1:
        raise ValueError(f"month: expected a month as YYYY-MM, such as 2026-11, got {text!r}")
    return date(int(match[1]), int(match[2]), 1)


def next_month(month: date) -> date:
    return date(month.year + month.month // 12, month.month % 12 + 1, 1)


def previous_month(month: date) -> date:
    return date(month.year - (month.month == 1), (month.month - 2) % 12 + 1, 1)


def month_bounds(*, month: date, time_zone: str) -> tuple[datetime, datetime]:
    """The month's first instant and the next month's, in `time_zone`, as aware UTC times."""
    zone = zone_of(time_zone)
    start = datetime.combine(month, time(), tzinfo=zone)
    end = datetime.combine(next_month(month), time(), tzinfo=zone)
    return start.astimezone(UTC), end.astimezone(UTC)


def last_ended_month(*, time_zone: str, now: datetime) -> date:
    """The month before the one `now` falls in, in `time_zone`."""
    local = now.astimezone(ZoneInfo(time_zone))
    return previous_month(date(local.year, local.month, 1))


@dataclass(frozen=True)
class Period:
    """Which ledger lines of an account a statement counts (see the module's docstring)."""

    account_id: int
    org: str
    lowest_line_id: int  # no line below it is the month's (the previous statement's carried_from_line_id)
    opening_before: datetime
    opening_line_id: int
    period_end: datetime
    closing_line_id: int

    @property
    def in_opening(self) -> Q:
        return Q(id__lte=self.opening_line_id, transaction__created_at__lt=self.opening_before)

    @property
    def in_closing(self) -> Q:
        return Q(id__lte=self.closing_line_id, transaction__created_at__lt=self.period_end)

    def lines(self) -> QuerySet[LedgerLine]:
        """The month's lines: in its cover, not in the previous statement's."""
        within = Q(account_id=self.account_id, id__gte=self.lowest_line_id)
        return LedgerLine.objects.filter(within & self.in_closing & ~self.in_opening)


@dataclass(frozen=True)
class Breakdown:
    """Charges by model and by day of use, as the statement shows them (money as text)."""

    by_model: list[dict[str, Any]] = field(default_factory=list)
    by_day: list[dict[str, Any]] = field(default_factory=list)


BreakdownBuilder = Callable[[Period], Breakdown]


class Outcome(StrEnum):
    CLOSED = "closed"
    ALREADY_CLOSED = "already_closed"
    SKIPPED = "skipped"  # the account was opened after the month
    REFUSED = "refused"


@dataclass(frozen=True)
class CloseResult:
    org: str
    month: str
    outcome: Outcome
    message: str = ""
    statement_id: int | None = None


def statements_close(
    *,
    account: Account,
    month: date,
    breakdown: BreakdownBuilder,
    now: datetime | None = None,
    closed_by: str = "",
) -> list[CloseResult]:
    """Close `month` for a customer account, and first every month between its last statement and it
    (a month the job missed), in order. A closed month again is a no-op that says so. StatementRefused
    is answered as a REFUSED result: the months before it stay closed, the rest wait."""
    now = now or timezone.now()
    latest = account.statements.order_by("-month").first()
    if latest is not None and latest.month >= month:
        if latest.month == month or account.statements.filter(month=month).exists():
            return [_result(account, month, Outcome.ALREADY_CLOSED, "The month is closed already.")]
        return [
            _result(
                account,
                month,
                Outcome.REFUSED,
                f"month: {latest.month_text} is closed: an earlier month can no longer close "
                "(its movements are in the statements that follow it).",
            )
        ]
    months = [month]
    if latest is not None:
        months, cursor = [], next_month(latest.month)
        while cursor <= month:
            months.append(cursor)
            cursor = next_month(cursor)
    results = []
    for each in months:
        try:
            statement, created = statement_close(
                account=account, month=each, breakdown=breakdown, now=now, closed_by=closed_by
            )
        except StatementRefused as exc:
            results.append(_result(account, each, Outcome.REFUSED, str(exc)))
            break
        if statement is None:
            results.append(_result(account, each, Outcome.SKIPPED, "The account was opened after the month."))
        elif created:
            results.append(_result(account, each, Outcome.CLOSED, statement_id=statement.pk))
        else:
            results.append(_result(account, each, Outcome.ALREADY_CLOSED, "The month is closed already."))
    return results


def _result(account: Account, month: date, outcome: Outcome, message: str = "", **extra: Any) -> CloseResult:
    return CloseResult(org=account.org, month=f"{month:%Y-%m}", outcome=outcome, message=message, **extra)


def statement_close(
    *,
    account: Account,
    month: date,
    breakdown: BreakdownBuilder,
    now: datetime | None = None,
    closed_by: str = "",
) -> tuple[Statement | None, bool]:
    """Close one month of a customer account: (statement, created); (None, False) when the account was
    opened after the month. Raises StatementRefused when the month has not ended in the account's zone,
    a later month is closed, or the figures do not balance against the ledger."""
    if account.kind != Account.Kind.CUSTOMER:
        raise StatementRefused(f"kind: statements are of customer accounts, not of {account.kind} accounts")
    now = now or timezone.now()
    period_start, period_end = month_bounds(month=month, time_zone=account.time_zone)
    if now < period_end:
        raise StatementRefused(
            f"month: {month:%Y-%m} has not ended in {account.time_zone} (it ends at {period_end.isoformat()})"
        )
    if account.created_at >= period_end:
        return None, False
    with transaction.atomic():
        # From here until commit no line of the account commits: W below is final for this close.
        locked = account_lock(account_id=account.pk)
        existing = Statement.objects.filter(account=locked, month=month).first()
        if existing is not None:
            return existing, False
        previous = locked.statements.order_by("-month").first()
        if previous is not None and previous.month > month:
            raise StatementRefused(f"month: {previous.month_text} is closed already; close months in order")
        highest = LedgerLine.objects.filter(account_id=locked.pk).aggregate(top=Max("id"))["top"] or 0
        period = Period(
            account_id=locked.pk,
            org=locked.org,
            lowest_line_id=previous.carried_from_line_id if previous else 0,
            opening_before=previous.period_end if previous else period_start,
            opening_line_id=previous.closing_line_id if previous else highest,
            period_end=period_end,
            closing_line_id=highest,
        )
        totals = _totals(period, opening=previous.closing_balance if previous else None)
        _check(locked, totals)
        parts = breakdown(period)
        _check_breakdown(parts, totals)
        statement = Statement(
            account=locked,
            month=month,
            time_zone=locked.time_zone,
            currency=locked.currency,
            period_start=period_start,
            closed_at=now,
            closed_by=closed_by[:150],
            **_watermarks(period, totals),
            **totals.figures,
        )
        statement.data = statement_data(statement, parts)
        statement.save()
    return statement, True


def _watermarks(period: Period, totals: "_Totals") -> dict[str, Any]:
    """Where the statement's lines end, and where the next statement's start."""
    return {
        "period_end": period.period_end,
        "opening_before": period.opening_before,
        "opening_line_id": period.opening_line_id,
        "closing_line_id": period.closing_line_id,
        "carried_from_line_id": totals.carried_from or period.closing_line_id + 1,
    }


@dataclass(frozen=True)
class _Totals:
    opening: Decimal  # the previous statement's closing balance (the first: its lines' sum)
    month: Decimal  # the month's lines
    after: Decimal  # lines at or below W created at or after the month's end: the next month's
    charges: Decimal
    topups: Decimal
    adjustments: Decimal
    other: Decimal  # a kind no statement column names: must be zero
    requests: int
    carried_from: int | None  # the lowest id among `after`'s lines

    @property
    def closing(self) -> Decimal:
        return self.opening + self.month

    @property
    def figures(self) -> dict[str, Any]:
        return {
            "opening_balance": self.opening,
            "charges": self.charges,
            "topups": self.topups,
            "adjustments": self.adjustments,
            "closing_balance": self.closing,
            "requests": self.requests,
        }


def _totals(period: Period, *, opening: Decimal | None) -> _Totals:
    """Every figure of the close in one pass over the account's lines from `lowest_line_id` to W: the
    month's lines and the next month's early ones (a month's worth, through the (account, id) index).
    The first statement (`opening` None) reads the account's earlier lines too: its opening balance."""
    in_month = period.in_closing & ~period.in_opening
    kind = "transaction__kind"
    usage, topup, adjustment = (
        LedgerTransaction.Kind.USAGE,
        LedgerTransaction.Kind.TOPUP,
        LedgerTransaction.Kind.ADJUSTMENT,
    )
    lines = LedgerLine.objects.filter(
        account_id=period.account_id, id__gte=period.lowest_line_id, id__lte=period.closing_line_id
    )
    sums = lines.aggregate(
        opening=Sum("amount", filter=period.in_opening),
        month=Sum("amount", filter=in_month),
        after=Sum("amount", filter=~period.in_closing & ~period.in_opening),
        carried_from=Min("id", filter=~period.in_closing & ~period.in_opening),
        usage=Sum("amount", filter=in_month & Q(**{kind: usage})),
        topups=Sum("amount", filter=in_month & Q(**{kind: topup})),
        adjustments=Sum("amount", filter=in_month & Q(**{kind: adjustment})),
        other=Sum("amount", filter=in_month & ~Q(**{f"{kind}__in": [usage, topup, adjustment]})),
        requests=Count("id", filter=in_month & Q(**{kind: usage})),
    )
    return _Totals(
        opening=money(sums["opening"]) if opening is None else opening,
        month=money(sums["month"]),
        after=money(sums["after"]),
        charges=-money(sums["usage"]),
        topups=money(sums["topups"]),
        adjustments=money(sums["adjustments"]),
        other=money(sums["other"]),
        requests=sums["requests"],
        carried_from=sums["carried_from"],
    )


def money(value: Any) -> Decimal:
    """A sum at the money scale: SQLite sums decimals as floats (noise far below a cent)."""
    return quantize_money(Decimal(value or 0))


def _check(account: Account, totals: _Totals) -> None:
    """The month against the ledger: its movements are its lines' sum, and the previous closing balance
    plus every line since is the account's balance (read under its lock)."""
    if totals.other:
        raise StatementRefused(f"Lines of an unknown transaction kind move {totals.other} in the month.")
    movements = -totals.charges + totals.topups + totals.adjustments
    if movements != totals.month:
        raise StatementRefused(
            f"The statement does not balance: opening {totals.opening} - charges {totals.charges} + top-ups "
            f"{totals.topups} + adjustments {totals.adjustments} = {totals.opening + movements}, but the "
            f"ledger's balance at the month's end is {totals.closing}."
        )
    if totals.closing + totals.after != account.balance:
        raise StatementRefused(
            f"The account's balance {account.balance} is not the ledger's balance at the month's end "
            f"{totals.closing} (opening {totals.opening} + the month's lines {totals.month}) plus the "
            f"{totals.after} posted since: a closed period's lines or the balance changed; run the ledger "
            "check before closing."
        )


def _check_breakdown(parts: Breakdown, totals: _Totals) -> None:
    for name in ("by_model", "by_day"):
        rows = getattr(parts, name)
        charged = sum((Decimal(row["charges"]) for row in rows), Decimal(0))
        requests = sum(row["requests"] for row in rows)
        if charged != totals.charges or requests != totals.requests:
            raise StatementRefused(
                f"The charges {name} sum to {charged} over {requests} records, the ledger's to "
                f"{totals.charges} over {totals.requests}."
            )


def statement_data(statement: Statement, parts: Breakdown) -> dict[str, Any]:
    """The snapshot the API answers and the admin prints (times in the statement's zone)."""
    zone = ZoneInfo(statement.time_zone)
    return {
        "org": statement.account.org,
        "month": f"{statement.month:%Y-%m}",
        "currency": statement.currency,
        "time_zone": statement.time_zone,
        "period_start": statement.period_start.astimezone(zone).isoformat(),
        "period_end": statement.period_end.astimezone(zone).isoformat(),
        "opening_balance": str(statement.opening_balance),
        "charges": str(statement.charges),
        "topups": str(statement.topups),
        "adjustments": str(statement.adjustments),
        "closing_balance": str(statement.closing_balance),
        "requests": statement.requests,
        "by_model": parts.by_model,
        "by_day": parts.by_day,
        "closed_at": statement.closed_at.isoformat(),
    }
