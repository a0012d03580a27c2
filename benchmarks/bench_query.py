"""The query API (list, keyset page, get-item, count, stats, RPM/TPM, search) beside raw SQL.

    python benchmarks/bench_query.py --rows 1000000   (on BENCH_DATABASE_URL, default llmlog_bench)

Data: --rows demo records over the last 30 days (20 orgs, a few big ones), those older than 15 days
moved to llmusage_history in one SQL statement (accounted, as the nightly backup leaves them), then the
hourly rollups built. Each API figure is one request end to end through Django's WSGI application, as
gunicorn calls it (every middleware, URL routing, API-key authentication, DRF, JSON), with an org key of
the biggest org or a platform key; its ceiling is the same query sent with psycopg on its own
connection in the same run, unprepared (llmlog prepares its hottest statements: the prepared ceilings
of page 1 and get-item are printed too, for reference).
"""

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import Figure, markdown_table, measure, setup_django, wsgi_client  # noqa: E402

HISTORY_AFTER = timedelta(days=15)
DEPTH = 100_000


def prepare_data(rows: int, reload: bool) -> None:
    from django.db import connection
    from django.utils import timezone

    from llmlog.demo import load_demo_data
    from llmlog.models import LLMUsageHistory, UsageAll, UsageRollupState
    from llmlog.partitions import ensure_history_partitions
    from llmlog.rollups import build_usage_rollups

    have = UsageAll.objects.count()
    if not reload and have == rows and LLMUsageHistory.objects.exists() and UsageRollupState.objects.exists():
        print(f"reusing {have:,} rows", flush=True)
        return
    with connection.cursor() as cursor:
        cursor.execute("TRUNCATE llmusage, llmusage_history, llmusage_rollup, llmusage_rollup_state")
    started = time.perf_counter()
    load_demo_data(rows=rows)
    print(f"loaded {rows:,} demo rows in {time.perf_counter() - started:.0f}s", flush=True)

    columns = [f.column for f in LLMUsageHistory._meta.concrete_fields if f.column != "backup_time"]
    names = ", ".join(f'"{c}"' for c in columns)
    picks = ", ".join(
        "CASE WHEN accounting_status = 'pending' THEN 'accounted' ELSE accounting_status END"
        if c == "accounting_status"
        else "COALESCE(accounted_at, now())"
        if c == "accounted_at"
        else f'"{c}"'
        for c in columns
    )
    # The monthly partitions of history the moved rows need, as the nightly backup makes them.
    today = timezone.localdate()
    ensure_history_partitions(today - timedelta(days=40), today)
    with connection.cursor() as cursor:
        # One statement: what the nightly backup does over many nights, for the older half.
        cursor.execute(
            f"WITH moved AS (DELETE FROM llmusage WHERE use_time < now() - %s RETURNING *) "
            f"INSERT INTO llmusage_history ({names}, backup_time) SELECT {picks}, now() FROM moved",
            [HISTORY_AFTER],
        )
        print(f"moved {cursor.rowcount:,} rows to llmusage_history", flush=True)
        cursor.execute("VACUUM ANALYZE llmusage")
        cursor.execute("VACUUM ANALYZE llmusage_history")
    started = time.perf_counter()
    counts = build_usage_rollups()
    print(f"built {counts['buckets']:,} rollup buckets in {time.perf_counter() - started:.1f}s", flush=True)
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE llmusage_rollup")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_000_000, help="usage records, hot and history")
    parser.add_argument("--repeat", type=int, default=3, help="measurements per figure (at least 3)")
    parser.add_argument("--reload", action="store_true", help="reload the data even if it is there")
    parser.add_argument("--explain", action="store_true", help="print the plans of the main queries")
    args = parser.parse_args()
    repeat = max(args.repeat, 3)

    setup_django()
    import os

    import psycopg
    from django.db import connection
    from django.utils import timezone

    from llmlog.keys import api_key_create
    from llmlog.models import UsageRollup

    prepare_data(args.rows, args.reload)

    # The ceilings are sent as Django sends its queries: unprepared, planned at every run. llmlog
    # prepares its page, get-item and RPM/TPM statements (llmlog.db); the same statements prepared on
    # raw psycopg are measured too, for reference, as ceiling-only lines.
    raw = psycopg.connect(os.environ["DATABASE_URL"], autocommit=True, prepare_threshold=None)
    raw_prepared = psycopg.connect(os.environ["DATABASE_URL"], autocommit=True, prepare_threshold=0)

    def sql(query: str, params: tuple = (), *, prepared: bool = False) -> Callable[[], object]:
        connection_ = raw_prepared if prepared else raw
        return lambda: connection_.execute(query, params).fetchall()

    biggest_org, org_rows = raw.execute(
        "SELECT userorgid, count(*) FROM llmusage_all GROUP BY 1 ORDER BY 2 DESC LIMIT 1"
    ).fetchone()
    _, org_key = api_key_create(userorgid=biggest_org, role="reader", scopes=["read"], name="bench")
    _, platform_key = api_key_create(userorgid="", role="admin", scopes=["read"], name="bench")
    clients = {key: wsgi_client(key) for key in (org_key, platform_key)}

    def api(path: str, key: str, expect: int = 200, **params) -> Callable[[], object]:
        get = clients[key]

        def call() -> object:
            status, body = get(path, params)
            if status != expect:
                raise RuntimeError(f"{path} {params}: {status} {body[:300]!r}")
            return body

        return call

    now = timezone.now()
    since = now - timedelta(days=30)
    since_text = since.isoformat()
    figures: list[Figure] = []

    def figure(
        name: str, app: Callable | None, ceiling: Callable | None, target: str = "", note: str = ""
    ) -> None:
        app_times, ceiling_times = measure(repeat, app, ceiling)
        figures.append(Figure(name, "ms", app=app_times, ceiling=ceiling_times, target=target, note=note))
        print(f"measured: {name}", flush=True)

    page_sql = "SELECT * FROM llmusage_all WHERE userorgid = %s ORDER BY use_time DESC, id DESC LIMIT 21"
    figure(
        f"page 1 of the biggest org ({org_rows:,} records)",
        api("/api/llmusage/", org_key),
        sql(page_sql, (biggest_org,)),
        "≤ 3x",
    )
    figure(
        "page 1 of the biggest org, raw SQL prepared",
        None,
        sql(page_sql, (biggest_org,), prepared=True),
        "",
        "reference: the ceiling above as a prepared statement, which llmlog's own page is",
    )
    figure(
        "page 1, all orgs (platform key)",
        api("/api/llmusage/", platform_key),
        sql("SELECT * FROM llmusage_all ORDER BY use_time DESC, id DESC LIMIT 21"),
        "≤ 3x",
    )

    # A keyset page deep in the whole table; OFFSET to the same depth for comparison.
    depth = min(DEPTH, args.rows // 2)
    use_time, last_id = raw.execute(
        "SELECT use_time, id FROM llmusage_all ORDER BY use_time DESC, id DESC OFFSET %s LIMIT 1",
        (depth - 1,),
    ).fetchone()
    cursor = _cursor_after(use_time, last_id)
    keyset_sql = (
        "SELECT * FROM llmusage_all WHERE use_time <= %s AND (use_time < %s OR id < %s) "
        "ORDER BY use_time DESC, id DESC LIMIT 21"
    )
    figure(
        f"keyset page at depth {depth:,} (cursor)",
        api("/api/llmusage/", platform_key, cursor=cursor),
        sql(keyset_sql, (use_time, use_time, last_id)),
        "≤ 3x",
    )
    api("/api/llmusage/", platform_key, expect=400, page=depth // 20 + 1, page_size=20)()  # refused
    figure(
        f"OFFSET page at depth {depth:,}",
        None,
        sql("SELECT * FROM llmusage_all ORDER BY use_time DESC, id DESC OFFSET %s LIMIT 20", (depth,)),
        "",
        "raw SQL only: the API answers page numbers past 10,000 records with a 400 naming `cursor`",
    )

    hot_id = raw.execute("SELECT id FROM llmusage ORDER BY id DESC LIMIT 1").fetchone()[0]
    history_id = raw.execute("SELECT id FROM llmusage_history ORDER BY id LIMIT 1").fetchone()[0]
    item_sql = "SELECT * FROM llmusage_all WHERE id = %s"
    figure("get-item (hot)", api(f"/api/llmusage/{hot_id}/", platform_key), sql(item_sql, (hot_id,)), "≤ 3x")
    figure(
        "get-item (history)",
        api(f"/api/llmusage/{history_id}/", platform_key),
        sql(item_sql, (history_id,)),
        "≤ 3x",
    )
    figure(
        "get-item (history), raw SQL prepared",
        None,
        sql(item_sql, (history_id,), prepared=True),
        "",
        "reference: the ceiling above as a prepared statement, which llmlog's own get-item is",
    )

    figure(
        "count, biggest org, 30 days",
        api("/api/llmusage/count/", org_key, start_time=since_text),
        sql(
            "SELECT count(*) FROM llmusage_all WHERE userorgid = %s AND use_time >= %s", (biggest_org, since)
        ),
        "≤ 3x",
    )
    figure(
        "count, whole table (estimate)",
        api("/api/llmusage/count/", platform_key),
        sql("SELECT count(*) FROM llmusage_all"),
        "",
        "the API answers from the planner's statistics (estimated: true); the ceiling counts",
    )

    sums = (
        "count(*), sum(input_tokens), sum(output_tokens), sum(cached_tokens), sum(cache_creation_tokens), "
        "sum(reasoning_tokens), sum(image_input_tokens), sum(web_search_count), sum(total_tokens), "
        "sum(amount), sum(cost)"
    )
    buckets = UsageRollup.objects.count()
    figure(
        "stats, biggest org, 30 days",
        api("/api/llmusage/stats/", org_key, start_time=since_text),
        sql(f"SELECT {sums} FROM llmusage_all WHERE userorgid = %s AND use_time >= %s", (biggest_org, since)),
        "< 50 ms",
        f"rollups ({buckets:,} buckets in all) + rows of the open hour; the ceiling sums the rows",
    )
    figure(
        "stats, all orgs, 30 days (dashboard)",
        api("/api/llmusage/stats/", platform_key, start_time=since_text),
        sql(f"SELECT {sums} FROM llmusage_all WHERE use_time >= %s", (since,)),
        "",
        "totals + by model + by day from rollups; the ceiling only the totals from the rows",
    )
    figure(
        "RPM/TPM, biggest org",
        api("/api/llmusage/rates/", org_key),
        sql(
            "SELECT count(*), sum(total_tokens) FROM llmusage WHERE use_time >= %s AND userorgid = %s",
            (now - timedelta(seconds=60), biggest_org),
        ),
        "≤ 3x",
        "a minute within today is all in llmusage (history holds past days): app and ceiling read it alone",
    )

    userid = raw.execute(
        "SELECT userid FROM llmusage_all WHERE userorgid = %s LIMIT 1", (biggest_org,)
    ).fetchone()[0]
    search_sql = (
        "SELECT * FROM llmusage_all WHERE (transno = %(k)s OR userid = %(k)s OR username = %(k)s "
        "OR userorgid = %(k)s OR model_name = %(k)s OR token_name = %(k)s "
        "OR (UPPER(error_message::text) LIKE UPPER(%(like)s) AND error_message <> '')) "
        "ORDER BY use_time DESC, id DESC LIMIT 21"
    )
    for keyword, label in (
        (userid, "a user id"),
        ("Bad gateway", "error text"),
        ("no-such-thing", "no match"),
    ):
        figure(
            f"search: {label}",
            api("/api/llmusage/search/", platform_key, keyword=keyword),
            sql(search_sql, {"k": keyword, "like": f"%{keyword}%"}),
            "< 100 ms",
        )

    if args.explain:
        explain = [
            ("page 1 of the biggest org", page_sql, (biggest_org,)),
            ("keyset page", keyset_sql, (use_time, use_time, last_id)),
            ("search", search_sql, {"k": userid, "like": f"%{userid}%"}),
        ]
        for name, query, params in explain:
            plan = raw.execute("EXPLAIN (ANALYZE, COSTS OFF) " + query, params).fetchall()
            print(f"\n-- {name}\n" + "\n".join(line for (line,) in plan))
    raw.close()
    connection.close()
    print()
    print(markdown_table(figures))
    slow = [f.name for f in figures if f.target == "< 50 ms" and statistics.median(f.app) >= 50]
    if slow:
        print(f"\nover target: {', '.join(slow)}")


def _cursor_after(use_time, last_id) -> str:
    import base64
    import json

    position = {"o": "-use_time", "v": use_time.isoformat(), "id": str(last_id)}
    return base64.urlsafe_b64encode(json.dumps(position, separators=(",", ":")).encode()).decode().rstrip("=")


if __name__ == "__main__":
    main()
