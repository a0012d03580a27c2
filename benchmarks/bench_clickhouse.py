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

import argparse
import sys
import time
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.bench_query import prepare_data  # noqa: E402
from benchmarks.common import ROOT, Figure, markdown_table, measure, setup_django  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_000_000, help="usage records, hot and history")
    parser.add_argument("--repeat", type=int, default=5, help="measurements per figure (at least 3)")
    parser.add_argument("--reload", action="store_true", help="reload the data even if it is there")
    args = parser.parse_args()

    setup_django()
    from django.conf import settings
    from django.utils import timezone

    from llmlog.clickhouse import mirror
    from llmlog.clickhouse.client import clickhouse_execute
    from llmlog.models import LLMUsageHistory
    from llmlog.queries import EVERY_RECORD, Ordering, UsageQuery
    from llmlog.selectors.records import usage_page
    from llmlog.selectors.stats import usage_stats
    from llmlog.selectors.totals import usage_count, usage_total
    from tests.clickhouse_server import clickhouse_server

    prepare_data(args.rows, args.reload)
    history = LLMUsageHistory.objects.count()
    with clickhouse_server(ROOT / "var" / "bench-clickhouse") as url:
        settings.CLICKHOUSE_URL = url
        mirror._tables_made.clear()
        mirror.clickhouse_delete_begin()  # no mark: the backfill checks every day and sets it
        started = time.perf_counter()
        counts = mirror.clickhouse_backfill()
        seconds = time.perf_counter() - started
        print(f"backfill: {counts['loaded']:,} of {history:,} history rows in {seconds:.1f}s", flush=True)
        clickhouse_execute("OPTIMIZE TABLE llmusage_history FINAL")  # as the merges leave it, in time

        now = timezone.now()
        since = now - timezone.timedelta(days=30)
        org, user = "org-01", "org-01-user-001"
        cases = [
            ("stats, every org, 30 days (rollups answer PostgreSQL)", usage_stats, UsageQuery(start=since)),
            ("stats, one org, one user, 30 days", usage_stats, UsageQuery(org=org, userid=user, start=since)),
            (
                "stats, every org, by day filter (use_date)",
                usage_stats,
                UsageQuery(day=(now - timezone.timedelta(days=20)).date()),
            ),
            (
                "total, new-api /stat by token_name, 30 days",
                usage_total,
                UsageQuery(org=org, token_name="001 key", start=since),
            ),
            (
                "total, every org, amount >= 0.01",
                usage_total,
                UsageQuery(min_amount=Decimal("0.01")),
            ),
            ("count, one org, status failed, all time", usage_count, UsageQuery(org=org, status="failed")),
            ("count, every record (rollups answer PostgreSQL)", usage_count, EVERY_RECORD),
        ]
        figures = [Figure(name="backfill into ClickHouse", unit="rows/s", app=[counts["loaded"] / seconds])]

        def answer(fn, query):
            result = fn(query=query, now=now)
            if isinstance(result, dict):
                result.pop("rollup_hours", None)
            return result

        for name, fn, query in cases:
            with_clickhouse = answer(fn, query)
            settings.CLICKHOUSE_URL = None
            alone = answer(fn, query)
            settings.CLICKHOUSE_URL = url
            assert with_clickhouse == alone, name

            def on(fn=fn, query=query):
                settings.CLICKHOUSE_URL = url
                return fn(query=query, now=now)

            def off(fn=fn, query=query):
                settings.CLICKHOUSE_URL = None
                return fn(query=query, now=now)

            app, ceiling = measure(args.repeat, on, off)
            figures.append(
                Figure(name=name, unit="ms", app=app, ceiling=ceiling, note="ceiling: PostgreSQL alone")
            )
            print(figures[-1].row(), flush=True)

        columns = ("id", "use_time", "userorgid", "model_name", "amount", "total_tokens")
        page_query = UsageQuery(org=org, userid=user)

        def page_on():
            settings.CLICKHOUSE_URL = url
            return usage_page(query=page_query, offset=9_000, limit=20, columns=columns)

        def page_off():
            settings.CLICKHOUSE_URL = None
            return usage_page(query=page_query, offset=9_000, limit=20, columns=columns)

        assert page_on() == page_off()
        app, ceiling = measure(args.repeat, page_on, page_off)
        figures.append(
            Figure(
                name="page 451 of one user (offset 9,000)",
                unit="ms",
                app=app,
                ceiling=ceiling,
                note="ceiling: PostgreSQL alone",
            )
        )
        page_query = UsageQuery(org=org, ordering=Ordering.parse("-amount"))
        assert page_on() == page_off()
        app, ceiling = measure(args.repeat, page_on, page_off)
        figures.append(
            Figure(
                name="page 451 of one org by amount, highest first (offset 9,000)",
                unit="ms",
                app=app,
                ceiling=ceiling,
                note="ceiling: PostgreSQL alone",
            )
        )
        settings.CLICKHOUSE_URL = None

    print(f"\n{args.rows:,} rows ({history:,} in history)\n")
    print(markdown_table(figures))


if __name__ == "__main__":
    main()
