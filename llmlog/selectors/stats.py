"""Stats of a query: totals, breakdowns by model, day and org, and the last minute's rates."""

from datetime import date, datetime, timedelta
from typing import Any

from django.db import connection
from django.db.models import Count, QuerySet
from django.db.models.functions import TruncDate
from django.utils import timezone

from core.money import quantize_money
from llmlog.clickhouse.reads import clickhouse_grouped_sums
from llmlog.queries import ALL, EVERY_RECORD, UsageQuery
from llmlog.replicas import replica_read
from llmlog.selectors.adjustments import usage_adjustments
from llmlog.selectors.records import usage_matching, usage_records
from llmlog.selectors.rollup_reads import grouped_sums
from llmlog.selectors.rows import fetch_one
from llmlog.selectors.sums import add_sums, empty_totals, sum_of

# RPM and TPM count the records that started in this window before now.
RATE_WINDOW = timedelta(seconds=60)


@replica_read
def usage_rpm_tpm(*, queryset: QuerySet, now: datetime | None = None) -> dict[str, int]:
    """{rpm, tpm}: requests and total tokens of the records in `queryset` that started in the last 60 s."""
    since = (now or timezone.now()) - RATE_WINDOW
    recent = queryset.filter(use_time__gte=since).order_by()
    sums = recent.aggregate(rpm=Count("id"), tpm=sum_of("total_tokens"))
    return {"rpm": sums["rpm"] or 0, "tpm": int(sums["tpm"] or 0)}


@replica_read
def usage_rates(*, query: UsageQuery = EVERY_RECORD, now: datetime | None = None) -> dict[str, int]:
    """{rpm, tpm} of the records of `query` that started in the last 60 s, whatever its time range.

    Unfiltered but for the org (what a dashboard polls every few seconds): the nightly move takes days
    before today only, so a minute that lies within today has all its records in llmusage, and on
    PostgreSQL one composed statement reads that table alone (compiling the aggregate and planning the
    llmusage_all view cost more than the query). Across midnight, on SQLite, or under any other filter
    it is `usage_rpm_tpm` over the view.
    """
    now = now or timezone.now()
    query = query.without_time()
    if query.source != ALL or query.keyword is not None or not query.given() <= {"org"}:
        return usage_rpm_tpm(queryset=usage_matching(query=query), now=now)
    org = query.org
    since = now - RATE_WINDOW
    if connection.vendor != "postgresql" or timezone.localdate(since) < timezone.localdate(now):
        return usage_rpm_tpm(queryset=usage_records(org=org), now=now)
    sql = "SELECT count(*), sum(total_tokens) FROM llmusage WHERE use_time >= %s"
    rpm, tpm = fetch_one(sql, [since], org=org)
    return {"rpm": rpm, "tpm": int(tpm or 0)}


@replica_read
def usage_sums_by_org(*, query: UsageQuery, now: datetime | None = None) -> list[dict[str, Any]]:
    """[{userorgid, requests, <token kinds>, amount, cost}] of the records of `query`, most amount first."""
    # History from ClickHouse when it holds it (llmlog.clickhouse.reads); None: PostgreSQL alone.
    groups = clickhouse_grouped_sums(query=query, records=usage_matching(query=query), by=("userorgid",))
    if groups is None:
        groups, _ = grouped_sums(
            query=query, now=now or timezone.now(), group_by=lambda _: {"userorgid": None}
        )
    by_org: dict[str, dict[str, Any]] = {}
    for group in groups:
        add_sums(by_org.setdefault(group["userorgid"], empty_totals()), group)
    return [
        {"userorgid": name, **sums}
        for name, sums in sorted(by_org.items(), key=lambda item: (-item[1]["amount"], item[0]))
    ]


@replica_read
def usage_stats(*, query: UsageQuery = EVERY_RECORD, now: datetime | None = None) -> dict[str, Any]:
    """Totals, rates and breakdowns of the records of `query`.

    Returns {requests, <token kinds>: int, amount, cost: Decimal, rpm, tpm: int,
    by_model: [{model_name, requests, <token kinds>, amount, cost}] (most requests first),
    by_day: [{day: date (in TIME_ZONE), requests, <token kinds>, amount, cost}] (oldest first),
    rollup_hours: [lo, hi) answered from hourly rollups, or None,
    adjustments: Decimal (what applied re-pricings adjusted the amount of these records by),
    net_amount: Decimal (amount + adjustments)}.

    When the rollups can answer the query (UsageQuery.rollups_can_answer: org, model, status and time
    range only), whole closed UTC hours already built and not marked stale are read from
    `llmusage_rollup` and only the rest from the rows (llmlog.selectors.rollup_reads). rpm and tpm are
    over the last 60 seconds under the same filters except the time range.
    """
    now = now or timezone.now()
    tz = timezone.get_current_timezone()
    # History from ClickHouse when it holds it (llmlog.clickhouse.reads); None: PostgreSQL alone, the
    # rollups where they answer.
    window = None
    groups = clickhouse_grouped_sums(
        query=query, records=usage_matching(query=query), by=("model_name", "day")
    )
    if groups is None:
        groups, window = grouped_sums(
            query=query,
            now=now,
            group_by=lambda time_column: {"model_name": None, "day": TruncDate(time_column, tzinfo=tz)},
        )
    totals = empty_totals()
    by_model: dict[str, dict[str, Any]] = {}
    by_day: dict[date, dict[str, Any]] = {}
    for group in groups:
        add_sums(totals, group)
        add_sums(by_model.setdefault(group["model_name"], empty_totals()), group)
        add_sums(by_day.setdefault(group["day"], empty_totals()), group)

    rates = usage_rpm_tpm(queryset=usage_matching(query=query.without_time()), now=now)
    adjustments = quantize_money(usage_adjustments(query=query))
    return {
        **totals,
        **rates,
        "adjustments": adjustments,
        "net_amount": quantize_money(totals["amount"] + adjustments),
        "by_model": [
            {"model_name": name, **sums}
            for name, sums in sorted(by_model.items(), key=lambda item: (-item[1]["requests"], item[0]))
        ],
        "by_day": [{"day": day, **sums} for day, sums in sorted(by_day.items())],
        "rollup_hours": window.hours if window else None,
    }
