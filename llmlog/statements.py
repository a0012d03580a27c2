"""Closing months into statements: llmlog's half, the charges by model and by day.

The ledger (accounting.statements) decides which lines a month counts and checks the totals; it knows a
usage line only by its record's id. The breakdowns need the record's model and use_date, so they are
built here, where the usage tables are: one grouped query per account and month joins the month's usage
lines to `llmusage_all` (hot and history alike) by id, grouped by (model_name, use_date); the by-model
and by-day lists are folded from its rows. On PostgreSQL the join reads the org's records of the
month's days only (index and partitions), never the whole history. A record purged before its month
closed (retention shorter than the delay) still counts, under an empty model name and no day.

A day is the record's `use_date`: a late record (November's, posted in December) is in December's
statement, under its November day.
"""

from collections import Counter, defaultdict
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from django.db import connection
from django.db.models import F
from django.utils import timezone

from accounting.models import Account, LedgerTransaction
from accounting.statements import (
    Breakdown,
    CloseResult,
    Outcome,
    Period,
    last_ended_month,
    money,
    statements_close,
)
from llmlog.jobs import job_run
from llmlog.models import UsageAll

CLOSE_JOB = "close_ended_periods"
# The refusals a job run keeps (each names the org, month and reason); the command shows them all.
MAX_REFUSALS_KEPT = 100


# The records a month's lines post were used around the month: looked up among the org's records of these
# days through the (userorgid, use_time) index and the history partitions of those days (use_date). A
# line whose record is outside them (a record accounted weeks late) is looked up by its id, one by one.
WINDOW_BEFORE = timedelta(days=7)
WINDOW_AFTER = timedelta(days=2)  # a record's use_time may be a little ahead of its posting


def statement_breakdown(period: Period) -> Breakdown:
    """Charges by model and by day of the period's usage lines (the customer's lines: -amount)."""
    lines = (
        period.lines()
        .filter(transaction__kind=LedgerTransaction.Kind.USAGE)
        .annotate(usage_ref=F("transaction__usage_id"), line_amount=F("amount"))
        .values("usage_ref", "line_amount")
    )
    sql, params = lines.query.sql_with_params()
    usage = connection.ops.quote_name(UsageAll._meta.db_table)
    if connection.vendor != "postgresql":  # the embedded database: a plain join
        grouped = (
            "SELECT u.model_name, u.use_date, COUNT(*), SUM(p.line_amount), "
            "SUM(u.input_tokens), SUM(u.output_tokens) "
            f"FROM ({sql}) p LEFT JOIN {usage} u ON u.id = p.usage_ref "
            "GROUP BY u.model_name, u.use_date"
        )
    else:
        low, high = period.opening_before - WINDOW_BEFORE, period.period_end + WINDOW_AFTER
        # use_date is in TIME_ZONE: a day either side covers any zone's offset from UTC
        days = (low.date() - timedelta(days=1), high.date() + timedelta(days=1))
        params = (*params, period.org, low, high, *days)
        fields = "model_name, use_date, input_tokens, output_tokens"
        grouped = (
            "SELECT COALESCE(n.model_name, f.model_name), COALESCE(n.use_date, f.use_date), COUNT(*), "
            "SUM(p.line_amount), SUM(COALESCE(n.input_tokens, f.input_tokens)), "
            "SUM(COALESCE(n.output_tokens, f.output_tokens)) "
            f"FROM ({sql}) p "
            f"LEFT JOIN (SELECT id, {fields} FROM {usage} WHERE userorgid = %s AND use_time >= %s "
            "AND use_time < %s AND use_date BETWEEN %s AND %s) n ON n.id = p.usage_ref "
            # LIMIT 1 keeps the look-up by id a look-up: a plain subquery would be flattened into a
            # join with every record, hot and history
            f"LEFT JOIN LATERAL (SELECT {fields} FROM {usage} o WHERE n.id IS NULL AND o.id = p.usage_ref "
            "LIMIT 1) f ON true GROUP BY 1, 2"
        )
    with connection.cursor() as cursor:
        cursor.execute(grouped, params)
        rows = cursor.fetchall()
    return _fold(rows)


def _fold(rows: list[tuple]) -> Breakdown:
    models: dict[str, dict[str, Any]] = defaultdict(
        lambda: {"requests": 0, "input_tokens": 0, "output_tokens": 0, "charges": Decimal(0)}
    )
    days: dict[str, dict[str, Any]] = defaultdict(lambda: {"requests": 0, "charges": Decimal(0)})
    for model_name, use_date, requests, amount, input_tokens, output_tokens in rows:
        charges = -money(amount)
        model = models[model_name or ""]
        model["requests"] += requests
        model["input_tokens"] += int(input_tokens or 0)
        model["output_tokens"] += int(output_tokens or 0)
        model["charges"] += charges
        day = days[str(use_date) if use_date is not None else ""]
        day["requests"] += requests
        day["charges"] += charges
    by_model = [
        {"model_name": name, **figures, "charges": str(figures["charges"])}
        for name, figures in sorted(models.items(), key=lambda item: (-item[1]["charges"], item[0]))
    ]
    by_day = [
        {"date": day or None, **figures, "charges": str(figures["charges"])}
        for day, figures in sorted(days.items())
    ]
    return Breakdown(by_model=by_model, by_day=by_day)


def close_period(
    *, month: date, org: str = "", now: datetime | None = None, closed_by: str = ""
) -> list[CloseResult]:
    """Close `month` for every customer account (or `org`'s), each in its own time zone."""
    accounts = Account.objects.filter(kind=Account.Kind.CUSTOMER).order_by("org")
    if org:
        accounts = accounts.filter(org=org)
    results: list[CloseResult] = []
    for account in accounts:
        results.extend(
            statements_close(
                account=account, month=month, breakdown=statement_breakdown, now=now, closed_by=closed_by
            )
        )
    return results


def close_ended_periods(*, now: datetime | None = None) -> list[CloseResult]:
    """The beat job: for each customer account, close the last month that has ended in its zone (and any
    it missed before). A month already closed is a no-op, so the job runs hourly on the 1st and 2nd:
    every zone's month has ended by the end of the 2nd in UTC."""
    now = now or timezone.now()
    results: list[CloseResult] = []
    with job_run(CLOSE_JOB) as run:
        for account in Account.objects.filter(kind=Account.Kind.CUSTOMER).order_by("org"):
            month = last_ended_month(time_zone=account.time_zone, now=now)
            results.extend(
                statements_close(
                    account=account, month=month, breakdown=statement_breakdown, now=now, closed_by="job"
                )
            )
        run.counts = dict(Counter(result.outcome.value for result in results))
        refusals = [f"{r.org} {r.month}: {r.message}" for r in results if r.outcome == Outcome.REFUSED]
        if refusals:  # on the Job runs page, where on-call looks
            run.counts["refusals"] = refusals[:MAX_REFUSALS_KEPT]
    return results
