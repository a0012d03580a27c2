"""Stats and dialect totals with and without ClickHouse, beside each other (issue 21).

    python benchmarks/bench_clickhouse.py --rows 1000000   (make bench CLICKHOUSE=1)

Data: bench_query's (--rows demo records over 30 days, the older 15 days in llmusage_history, rollups
built), on BENCH_DATABASE_URL. A ClickHouse server of the benchmark's own (Debian's clickhouse-server,
tests/clickhouse_server.py, data under var/bench-clickhouse) gets history by `backfill_clickhouse`'s
service. Each figure is the selector every entry point calls (usage_stats, usage_total, usage_count,
usage_page), in process: "llmlog" is with CLICKHOUSE_URL set, "ceiling" the same call on PostgreSQL
alone (with its rollups), measured alternately in the same run; the ratio is with / without (below 1:
ClickHouse is faster). Every pair of answers is checked equal before it is timed.
"""

import sys
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.bench_query import prepare_data  # noqa: E402
from benchmarks.report import Figure, markdown_table, measure  # noqa: E402
from benchmarks.startup import ROOT, query_data_parser, setup_django  # noqa: E402

ORG, USER = "org-01", "org-01-user-001"


def backfill(history: int) -> Figure:
    """History (`history` rows) into ClickHouse by `backfill_clickhouse`'s service (CLICKHOUSE_URL set),
    merged as the merges leave it in time: its rate."""
    from llmlog.clickhouse import mirror
    from llmlog.clickhouse.client import clickhouse_execute

    mirror._tables_made.clear()
    mirror.clickhouse_delete_begin()  # no mark: the backfill checks every day and sets it
    started = time.perf_counter()
    counts = mirror.clickhouse_backfill()
    seconds = time.perf_counter() - started
    print(f"backfill: {counts['loaded']:,} of {history:,} history rows in {seconds:.1f}s", flush=True)
    clickhouse_execute("OPTIMIZE TABLE llmusage_history FINAL")  # as the merges leave it, in time
    return Figure(name="backfill into ClickHouse", unit="rows/s", app=[counts["loaded"] / seconds])


def with_and_without(
    url: str, call: Callable[[], object]
) -> tuple[Callable[[], object], Callable[[], object]]:
    """`call` with CLICKHOUSE_URL set to `url`, and on PostgreSQL alone."""
    from django.conf import settings

    def on() -> object:
        settings.CLICKHOUSE_URL = url
        return call()

    def off() -> object:
        settings.CLICKHOUSE_URL = None
        return call()

    return on, off


def compared(name: str, url: str, call: Callable[[], object], repeat: int) -> Figure:
    """`call` with ClickHouse beside PostgreSQL alone, their answers checked equal first (but for which
    rollup hours a stats answer read, which only PostgreSQL has)."""
    on, off = with_and_without(url, call)

    def answer(fn: Callable[[], object]) -> object:
        result = fn()
        if isinstance(result, dict):
            result.pop("rollup_hours", None)
        return result

    assert answer(on) == answer(off), name
    app, ceiling = measure(repeat, on, off)
    return Figure(name=name, unit="ms", app=app, ceiling=ceiling, note="ceiling: PostgreSQL alone")


def selector_figures(url: str, repeat: int) -> list[Figure]:
    """The stats, totals and counts every entry point asks, each with and without ClickHouse."""
    from django.utils import timezone

    from llmlog.queries import EVERY_RECORD, UsageQuery
    from llmlog.selectors.stats import usage_stats
    from llmlog.selectors.totals import usage_count, usage_total

    now = timezone.now()
    since = now - timezone.timedelta(days=30)
    cases = [
        ("stats, every org, 30 days (rollups answer PostgreSQL)", usage_stats, UsageQuery(start=since)),
        ("stats, one org, one user, 30 days", usage_stats, UsageQuery(org=ORG, userid=USER, start=since)),
        (
            "stats, every org, by day filter (use_date)",
            usage_stats,
            UsageQuery(day=(now - timezone.timedelta(days=20)).date()),
        ),
        (
            "total, new-api /stat by token_name, 30 days",
            usage_total,
            UsageQuery(org=ORG, token_name="001 key", start=since),
        ),
        ("total, every org, amount >= 0.01", usage_total, UsageQuery(min_amount=Decimal("0.01"))),
        ("count, one org, status failed, all time", usage_count, UsageQuery(org=ORG, status="failed")),
        ("count, every record (rollups answer PostgreSQL)", usage_count, EVERY_RECORD),
    ]
    figures = []
    for name, selector, query in cases:
        figures.append(
            compared(name, url, lambda selector=selector, query=query: selector(query=query, now=now), repeat)
        )
        print(figures[-1].row(), flush=True)
    return figures


def page_figures(url: str, repeat: int) -> list[Figure]:
    """A page 9,000 records deep, of one user by time and of one org by amount."""
    from llmlog.queries import Ordering, UsageQuery
    from llmlog.selectors.records import usage_page

    columns = ("id", "use_time", "userorgid", "model_name", "amount", "total_tokens")
    cases = [
        ("page 451 of one user (offset 9,000)", UsageQuery(org=ORG, userid=USER)),
        (
            "page 451 of one org by amount, highest first (offset 9,000)",
            UsageQuery(org=ORG, ordering=Ordering.parse("-amount")),
        ),
    ]
    return [
        compared(
            name,
            url,
            lambda query=query: usage_page(query=query, offset=9_000, limit=20, columns=columns),
            repeat,
        )
        for name, query in cases
    ]


def main() -> None:
    args = query_data_parser(__doc__, repeat=5).parse_args()
    setup_django()
    from django.conf import settings

    from llmlog.models import LLMUsageHistory
    from tests.clickhouse_server import clickhouse_server

    prepare_data(args.rows, args.reload)
    history = LLMUsageHistory.objects.count()
    with clickhouse_server(ROOT / "var" / "bench-clickhouse") as url:
        settings.CLICKHOUSE_URL = url
        figures = [backfill(history), *selector_figures(url, args.repeat), *page_figures(url, args.repeat)]
        settings.CLICKHOUSE_URL = None

    print(f"\n{args.rows:,} rows ({history:,} in history)\n")
    print(markdown_table(figures))


if __name__ == "__main__":
    main()
