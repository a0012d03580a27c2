"""The operator's admin on a big table: changelists, search, the dashboard and CSV export, beside raw SQL.

    python benchmarks/bench_admin.py --rows 1000000   (on BENCH_DATABASE_URL, default llmlog_bench)

Data as in bench_query.py (--rows demo records over 30 days, the older half in llmusage_history,
rollups built; reused when already there). Each admin figure is one request end to end through Django
(session auth, the admin, templates) with django.test.Client as a superuser; its ceiling is the page's
own query (the 50 rows, or the sums) sent with psycopg on its own connection in the same run. The CSV
export of 100,000 records is measured as a rate beside COPY ... TO STDOUT of the same rows, and as the
peak of Python's allocations while it streams, beside the same for a tenth of the rows.
"""

import argparse
import sys
import time
from datetime import datetime, timedelta
from datetime import time as clock
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import Figure, markdown_table, measure, setup_django, timed  # noqa: E402

# The figure: the CSV export of 100,000 records, its rate and its memory.
EXPORT_ROWS = 100_000


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_000_000, help="usage records, hot and history")
    parser.add_argument("--repeat", type=int, default=3, help="measurements per figure (at least 3)")
    parser.add_argument("--reload", action="store_true", help="reload the data even if it is there")
    args = parser.parse_args()
    repeat = max(args.repeat, 3)

    setup_django()
    import os

    import psycopg
    from django.contrib.auth.models import User
    from django.test import Client
    from django.utils import timezone

    from benchmarks.bench_query import prepare_data
    from llmlog.models import LLMUsage

    prepare_data(args.rows, args.reload)
    user, _ = User.objects.get_or_create(
        username="bench-admin", defaults={"is_staff": True, "is_superuser": True}
    )
    client = Client()
    client.force_login(user)
    # Unprepared, as Django sends its queries (psycopg would prepare a statement after 5 runs).
    raw = psycopg.connect(os.environ["DATABASE_URL"], autocommit=True, prepare_threshold=None)

    def page(url: str, params: dict | None = None):
        def get() -> None:
            response = client.get(url, params or {})
            body = b"".join(response.streaming_content) if response.streaming else response.content
            assert response.status_code == 200, (url, response.status_code, body[:500])

        return get

    def sql(query: str, params: tuple = ()):
        return lambda: raw.execute(query, params).fetchall()

    big_org = "org-01"  # the demo's biggest org
    latest = LLMUsage.objects.order_by("-use_time").values_list("transno", "use_time").first()
    transno, last_time = latest
    day = timezone.localdate(last_time) - timedelta(days=1)
    day_start = timezone.make_aware(datetime.combine(day, clock()))
    day_end = day_start + timedelta(days=1)
    month_start = day_start - timedelta(days=29)
    page_sql = "SELECT * FROM llmusage {where} ORDER BY use_time DESC, id DESC LIMIT 50"
    count_sql = "SELECT COUNT(*) FROM (SELECT 1 FROM llmusage {where} LIMIT 10001) AS bounded"

    def page_ceiling(where: str, params: tuple):
        def run() -> None:
            raw.execute(page_sql.format(where=where), params).fetchall()
            raw.execute(count_sql.format(where=where), params).fetchall()

        return run

    usage_list = "/admin/llmlog/llmusage/"
    org_day = "WHERE userorgid = %s AND use_time >= %s AND use_time < %s"
    cases = [
        ("usage list, newest first", page(usage_list), page_ceiling("", ())),
        (
            f"usage list, one org ({big_org}) and one day",
            page(
                usage_list,
                {"userorgid": big_org, "use_time__range__gte": str(day), "use_time__range__lte": str(day)},
            ),
            page_ceiling(org_day, (big_org, day_start, day_end)),
        ),
        (
            "usage list, search a transno",
            page(usage_list, {"q": transno}),
            page_ceiling("WHERE transno = %s", (transno,)),
        ),
        (
            "usage list, search a model name (a third of the rows)",
            page(usage_list, {"q": "gpt-4o"}),
            page_ceiling("WHERE model_name = %s", ("gpt-4o",)),
        ),
        (
            "usage list, failed calls (3%, no index on status)",
            page(usage_list, {"status__exact": "failed"}),
            page_ceiling("WHERE status = %s", ("failed",)),
        ),
        (
            "history list, newest first",
            page("/admin/llmlog/llmusagehistory/"),
            sql("SELECT * FROM llmusage_history ORDER BY use_time DESC, id DESC LIMIT 50"),
        ),
        (
            "dashboard (today, 30 days by day, model, org)",
            page("/admin/dashboard/"),
            sql(
                "SELECT date_trunc('day', hour), model_name, userorgid, SUM(requests), SUM(total_tokens), "
                "SUM(amount), SUM(cost) FROM llmusage_rollup WHERE hour >= %s GROUP BY 1, 2, 3",
                (month_start,),
            ),
        ),
        (
            f"CSV export, one org ({big_org}) and one day",
            page(
                usage_list + "export-csv/",
                {"userorgid": big_org, "use_time__range__gte": str(day), "use_time__range__lte": str(day)},
            ),
            sql(
                "SELECT use_time, transno, userorgid, userid, model_name, input_tokens, output_tokens, "
                "total_tokens, amount, cost, error_message FROM llmusage " + org_day,
                (big_org, day_start, day_end),
            ),
        ),
    ]
    figures = []
    for name, app, ceiling in cases:
        started = time.perf_counter()
        app_ms, ceiling_ms = measure(repeat, app, ceiling)
        print(f"{name}: {time.perf_counter() - started:.1f}s", file=sys.stderr, flush=True)
        figures.append(Figure(name, "ms", app_ms, ceiling_ms, target="< 1000 ms"))
    figures += csv_export_figures(client, raw, last_day=day, repeat=3)
    print(markdown_table(figures))


def csv_export_figures(client, raw, *, last_day, repeat: int) -> list[Figure]:
    """The usage list's CSV export of the newest days holding at least EXPORT_ROWS records (all of
    llmusage on a small table): rows/s beside a raw COPY ... TO STDOUT of the same rows, and the peak
    of Python's allocations while streaming it, beside the same for a tenth of the rows (flat: equal)."""
    import tracemalloc

    from django.utils import timezone

    def days_back(rows: int) -> int:
        days = 1
        while days < 60:
            since = timezone.make_aware(datetime.combine(last_day - timedelta(days=days - 1), clock()))
            if (
                raw.execute("SELECT count(*) FROM llmusage WHERE use_time >= %s", (since,)).fetchone()[0]
                >= rows
            ):
                break
            days += 1
        return days

    def export(days: int):
        first = last_day - timedelta(days=days - 1)
        params = {"use_time__range__gte": str(first), "use_time__range__lte": str(last_day)}
        lines = 0

        def run() -> None:
            nonlocal lines
            response = client.get("/admin/llmlog/llmusage/export-csv/", params)
            assert response.status_code == 200, response.status_code
            lines = sum(chunk.count(b"\n") for chunk in response.streaming_content)

        run()
        since = timezone.make_aware(datetime.combine(first, clock()))
        until = timezone.make_aware(datetime.combine(last_day + timedelta(days=1), clock()))
        copy = (
            "COPY (SELECT use_time, transno, userorgid, userid, model_name, input_tokens, output_tokens, "
            "total_tokens, amount, cost, error_message FROM llmusage WHERE use_time >= %s AND use_time < %s "
            "ORDER BY use_time DESC, id DESC) TO STDOUT WITH CSV HEADER"
        )

        def ceiling() -> None:
            with raw.cursor() as cursor, cursor.copy(copy, (since, until)) as out:
                for _ in out:
                    pass

        return run, ceiling, lines - 2  # header and totals rows

    big_days = days_back(EXPORT_ROWS)
    run, ceiling, rows = export(big_days)
    rate = Figure(
        f"CSV export, {rows:,} records (usage list, {big_days} days)", "rows/s", note="ceiling: COPY"
    )
    for _ in range(repeat):
        rate.app.append(rows / timed(run))
        rate.ceiling.append(rows / timed(ceiling))
    # One traced run per size: the peak is the same run after run (5,317-5,344 KiB over 3 runs each
    # at 1M rows), and tracing slows the export several times over.
    memory = []
    for days in (max(1, big_days // 10), big_days):
        run, _, exported = export(days)
        tracemalloc.start()
        run()
        peak = tracemalloc.get_traced_memory()[1] / 1024
        tracemalloc.stop()
        figure = Figure(f"CSV export peak memory, {exported:,} records (tracemalloc, one run)", "KiB")
        figure.app = [peak]
        memory.append(figure)
    return [rate, *memory]


if __name__ == "__main__":
    main()
