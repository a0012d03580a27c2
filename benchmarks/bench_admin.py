"""The operator's admin on a big table: changelists, search, the dashboard and CSV export, beside raw SQL.

    python benchmarks/bench_admin.py --rows 1000000   (on BENCH_DATABASE_URL, default llmlog_bench)

Data as in bench_query.py (--rows demo records over 30 days, the older half in llmusage_history,
rollups built; reused when already there). Each admin figure is one request end to end through Django
(session auth, the admin, templates) with django.test.Client as a superuser; its ceiling is the page's
own query (the 50 rows, or the sums) sent with psycopg on its own connection in the same run. The CSV
export of 100,000 records is measured as a rate beside COPY ... TO STDOUT of the same rows, and as the
peak of Python's allocations while it streams, beside the same for a tenth of the rows.
"""

import sys
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from datetime import time as clock
from pathlib import Path
from typing import TYPE_CHECKING

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.data import ceiling_connection  # noqa: E402
from benchmarks.report import Figure, markdown_table, measure, timed  # noqa: E402
from benchmarks.startup import query_data_parser, setup_django  # noqa: E402

if TYPE_CHECKING:
    import psycopg
    from django.test import Client

# The figure: the CSV export of 100,000 records, its rate and its memory.
EXPORT_ROWS = 100_000
BIG_ORG = "org-01"  # the demo's biggest org
USAGE_LIST = "/admin/llmlog/llmusage/"
EXPORT_COLUMNS = (
    "use_time, transno, userorgid, userid, model_name, input_tokens, output_tokens, "
    "total_tokens, amount, cost, error_message"
)
Case = tuple[str, Callable[[], object], Callable[[], object]]


def midnight(day: date) -> datetime:
    from django.utils import timezone

    return timezone.make_aware(datetime.combine(day, clock()))


@dataclass
class AdminPages:
    """The admin's pages as a logged-in superuser sees them, and their ceilings on a raw connection."""

    client: "Client"
    raw: "psycopg.Connection"

    @classmethod
    def open(cls) -> "AdminPages":
        from django.contrib.auth.models import User
        from django.test import Client

        user, _ = User.objects.get_or_create(
            username="bench-admin", defaults={"is_staff": True, "is_superuser": True}
        )
        client = Client()
        client.force_login(user)
        return cls(client, ceiling_connection())

    def page(self, url: str, params: dict | None = None) -> Callable[[], None]:
        def get() -> None:
            response = self.client.get(url, params or {})
            body = b"".join(response.streaming_content) if response.streaming else response.content
            assert response.status_code == 200, (url, response.status_code, body[:500])

        return get

    def sql(self, query: str, params: tuple = ()) -> Callable[[], object]:
        return lambda: self.raw.execute(query, params).fetchall()

    def page_ceiling(self, where: str, params: tuple) -> Callable[[], None]:
        """The changelist's own queries: its 50 rows, and its count bounded at 10,001."""
        page_sql = f"SELECT * FROM llmusage {where} ORDER BY use_time DESC, id DESC LIMIT 50"
        count_sql = f"SELECT COUNT(*) FROM (SELECT 1 FROM llmusage {where} LIMIT 10001) AS bounded"

        def run() -> None:
            self.raw.execute(page_sql, params).fetchall()
            self.raw.execute(count_sql, params).fetchall()

        return run


def usage_list_cases(pages: AdminPages, *, transno: str, day: date) -> list[Case]:
    """The usage changelist: newest first, one org's day, a search by transno and by model, a filter."""
    one_day = {"userorgid": BIG_ORG, "use_time__range__gte": str(day), "use_time__range__lte": str(day)}
    org_day = "WHERE userorgid = %s AND use_time >= %s AND use_time < %s"
    return [
        ("usage list, newest first", pages.page(USAGE_LIST), pages.page_ceiling("", ())),
        (
            f"usage list, one org ({BIG_ORG}) and one day",
            pages.page(USAGE_LIST, one_day),
            pages.page_ceiling(org_day, (BIG_ORG, midnight(day), midnight(day + timedelta(days=1)))),
        ),
        (
            "usage list, search a transno",
            pages.page(USAGE_LIST, {"q": transno}),
            pages.page_ceiling("WHERE transno = %s", (transno,)),
        ),
        (
            "usage list, search a model name (a third of the rows)",
            pages.page(USAGE_LIST, {"q": "gpt-4o"}),
            pages.page_ceiling("WHERE model_name = %s", ("gpt-4o",)),
        ),
        (
            "usage list, failed calls (3%, no index on status)",
            pages.page(USAGE_LIST, {"status__exact": "failed"}),
            pages.page_ceiling("WHERE status = %s", ("failed",)),
        ),
    ]


def other_page_cases(pages: AdminPages, *, day: date) -> list[Case]:
    """The history changelist, the dashboard, and the CSV export of one org's day."""
    one_day = {"userorgid": BIG_ORG, "use_time__range__gte": str(day), "use_time__range__lte": str(day)}
    return [
        (
            "history list, newest first",
            pages.page("/admin/llmlog/llmusagehistory/"),
            pages.sql("SELECT * FROM llmusage_history ORDER BY use_time DESC, id DESC LIMIT 50"),
        ),
        (
            "dashboard (today, 30 days by day, model, org)",
            pages.page("/admin/dashboard/"),
            pages.sql(
                "SELECT date_trunc('day', hour), model_name, userorgid, SUM(requests), SUM(total_tokens), "
                "SUM(amount), SUM(cost) FROM llmusage_rollup WHERE hour >= %s GROUP BY 1, 2, 3",
                (midnight(day) - timedelta(days=29),),
            ),
        ),
        (
            f"CSV export, one org ({BIG_ORG}) and one day",
            pages.page(USAGE_LIST + "export-csv/", one_day),
            pages.sql(
                f"SELECT {EXPORT_COLUMNS} FROM llmusage "
                "WHERE userorgid = %s AND use_time >= %s AND use_time < %s",
                (BIG_ORG, midnight(day), midnight(day + timedelta(days=1))),
            ),
        ),
    ]


def page_figures(cases: list[Case], repeat: int) -> list[Figure]:
    figures = []
    for name, app, ceiling in cases:
        started = time.perf_counter()
        app_ms, ceiling_ms = measure(repeat, app, ceiling)
        print(f"{name}: {time.perf_counter() - started:.1f}s", file=sys.stderr, flush=True)
        figures.append(Figure(name, "ms", app_ms, ceiling_ms, target="< 1000 ms"))
    return figures


# --- the CSV export of the usage list --------------------------------------------------------------


def days_back(raw: "psycopg.Connection", last_day: date, rows: int) -> int:
    """How many days up to `last_day` hold at least `rows` records in llmusage (at most 60)."""
    days = 1
    while days < 60:
        since = midnight(last_day - timedelta(days=days - 1))
        if raw.execute("SELECT count(*) FROM llmusage WHERE use_time >= %s", (since,)).fetchone()[0] >= rows:
            break
        days += 1
    return days


def export(pages: AdminPages, last_day: date, days: int) -> tuple[Callable, Callable, int]:
    """The export of the `days` up to `last_day`, run once: (the export, its COPY ceiling, its records)."""
    first = last_day - timedelta(days=days - 1)
    params = {"use_time__range__gte": str(first), "use_time__range__lte": str(last_day)}
    lines = 0

    def run() -> None:
        nonlocal lines
        response = pages.client.get(USAGE_LIST + "export-csv/", params)
        assert response.status_code == 200, response.status_code
        lines = sum(chunk.count(b"\n") for chunk in response.streaming_content)

    run()
    since, until = midnight(first), midnight(last_day + timedelta(days=1))
    copy = (
        f"COPY (SELECT {EXPORT_COLUMNS} FROM llmusage WHERE use_time >= %s AND use_time < %s "
        "ORDER BY use_time DESC, id DESC) TO STDOUT WITH CSV HEADER"
    )

    def ceiling() -> None:
        with pages.raw.cursor() as cursor, cursor.copy(copy, (since, until)) as out:
            for _ in out:
                pass

    return run, ceiling, lines - 2  # header and totals rows


def csv_export_figures(pages: AdminPages, *, last_day: date, repeat: int) -> list[Figure]:
    """The usage list's CSV export of the newest days holding at least EXPORT_ROWS records (all of
    llmusage on a small table): rows/s beside a raw COPY ... TO STDOUT of the same rows, and the peak
    of Python's allocations while streaming it, beside the same for a tenth of the rows (flat: equal)."""
    big_days = days_back(pages.raw, last_day, EXPORT_ROWS)
    run, ceiling, rows = export(pages, last_day, big_days)
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
        run, _, exported = export(pages, last_day, days)
        tracemalloc.start()
        run()
        peak = tracemalloc.get_traced_memory()[1] / 1024
        tracemalloc.stop()
        figure = Figure(f"CSV export peak memory, {exported:,} records (tracemalloc, one run)", "KiB")
        figure.app = [peak]
        memory.append(figure)
    return [rate, *memory]


def main() -> None:
    args = query_data_parser(__doc__, repeat=3).parse_args()
    setup_django()
    from django.utils import timezone

    from benchmarks.bench_query import prepare_data
    from llmlog.models import LLMUsage

    prepare_data(args.rows, args.reload)
    pages = AdminPages.open()
    transno, last_time = LLMUsage.objects.order_by("-use_time").values_list("transno", "use_time").first()
    day = timezone.localdate(last_time) - timedelta(days=1)
    cases = usage_list_cases(pages, transno=transno, day=day) + other_page_cases(pages, day=day)
    figures = page_figures(cases, max(args.repeat, 3))
    figures += csv_export_figures(pages, last_day=day, repeat=3)
    print(markdown_table(figures))


if __name__ == "__main__":
    main()
