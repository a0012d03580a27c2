"""The operator's admin on a big table: changelists, search, the dashboard and CSV export, beside raw SQL.

    python benchmarks/bench_admin.py --rows 1000000   (on BENCH_DATABASE_URL, default llmlog_bench)

Data as in bench_query.py (--rows demo records over 30 days, the older half in llmusage_history,
rollups built; reused when already there). Each admin figure is one request end to end through Django
(session auth, the admin, templates) with django.test.Client as a superuser; its ceiling is the page's
own query (the 50 rows, or the sums) sent with psycopg on its own connection in the same run.
"""

import argparse
import sys
import time
from datetime import datetime, timedelta
from datetime import time as clock
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import Figure, markdown_table, setup_django  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_000_000, help="usage records, hot and history")
    parser.add_argument("--repeat", type=int, default=5, help="measurements per figure (at least 3)")
    parser.add_argument("--reload", action="store_true", help="reload the data even if it is there")
    args = parser.parse_args()
    repeat = max(args.repeat, 3)

    setup_django()
    import os

    import psycopg
    from django.contrib.auth.models import User
    from django.test import Client
    from django.utils import timezone

    from benchmarks.bench_query import measure, prepare_data
    from llmlog.models import LLMUsage

    prepare_data(args.rows, args.reload)
    user, _ = User.objects.get_or_create(
        username="bench-admin", defaults={"is_staff": True, "is_superuser": True}
    )
    client = Client()
    client.force_login(user)
    raw = psycopg.connect(os.environ["DATABASE_URL"], autocommit=True)

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
    print(markdown_table(figures))


if __name__ == "__main__":
    main()
