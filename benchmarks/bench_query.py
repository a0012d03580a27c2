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
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.data import OrgReads, ceiling_connection  # noqa: E402
from benchmarks.processes import wsgi_client  # noqa: E402
from benchmarks.report import Figure, markdown_table  # noqa: E402
from benchmarks.startup import query_data_parser, setup_django  # noqa: E402

if TYPE_CHECKING:
    import psycopg

HISTORY_AFTER = timedelta(days=15)
DEPTH = 100_000

PAGE_SQL = "SELECT * FROM llmusage_all WHERE userorgid = %s ORDER BY use_time DESC, id DESC LIMIT 21"
KEYSET_SQL = (
    "SELECT * FROM llmusage_all WHERE use_time <= %s AND (use_time < %s OR id < %s) "
    "ORDER BY use_time DESC, id DESC LIMIT 21"
)
ITEM_SQL = "SELECT * FROM llmusage_all WHERE id = %s"
SUMS = (
    "count(*), sum(input_tokens), sum(output_tokens), sum(cached_tokens), sum(cache_creation_tokens), "
    "sum(reasoning_tokens), sum(image_input_tokens), sum(web_search_count), sum(total_tokens), "
    "sum(amount), sum(cost)"
)
SEARCH_SQL = (
    "SELECT * FROM llmusage_all WHERE (transno = %(k)s OR userid = %(k)s OR username = %(k)s "
    "OR userorgid = %(k)s OR model_name = %(k)s OR token_name = %(k)s "
    "OR (UPPER(error_message::text) LIKE UPPER(%(like)s) AND error_message <> '')) "
    "ORDER BY use_time DESC, id DESC LIMIT 21"
)


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


@dataclass
class Reads(OrgReads):
    """OrgReads, with the ceilings' prepared connection and the API's clients for the two keys."""

    raw_prepared: "psycopg.Connection" = field(init=False)
    clients: dict[str, Callable] = field(init=False)

    def __post_init__(self) -> None:
        # The ceilings are sent as Django sends its queries: unprepared, planned at every run. llmlog
        # prepares its page, get-item and RPM/TPM statements (llmlog.db); the same statements prepared on
        # raw psycopg are measured too, for reference, as ceiling-only lines.
        self.raw_prepared = ceiling_connection(prepared=True)
        self.clients = {key: wsgi_client(key) for key in (self.org_key, self.platform_key)}

    @property
    def since(self) -> datetime:
        return self.now - timedelta(days=30)

    def sql(self, query: str, params: tuple | dict = (), *, prepared: bool = False) -> Callable[[], object]:
        connection_ = self.raw_prepared if prepared else self.raw
        return lambda: connection_.execute(query, params).fetchall()

    def api(self, path: str, key: str, expect: int = 200, **params) -> Callable[[], object]:
        get = self.clients[key]

        def call() -> object:
            status, body = get(path, params)
            if status != expect:
                raise RuntimeError(f"{path} {params}: {status} {body[:300]!r}")
            return body

        return call


def page_figures(reads: Reads) -> None:
    """Page 1 of the biggest org (and its ceiling prepared, for reference), and of all orgs."""
    reads.report.time(
        f"page 1 of the biggest org ({reads.org_rows:,} records)",
        reads.api("/api/llmusage/", reads.org_key),
        reads.sql(PAGE_SQL, (reads.org,)),
        "≤ 3x",
    )
    reads.report.time(
        "page 1 of the biggest org, raw SQL prepared",
        None,
        reads.sql(PAGE_SQL, (reads.org,), prepared=True),
        "",
        "reference: the ceiling above as a prepared statement, which llmlog's own page is",
    )
    reads.report.time(
        "page 1, all orgs (platform key)",
        reads.api("/api/llmusage/", reads.platform_key),
        reads.sql("SELECT * FROM llmusage_all ORDER BY use_time DESC, id DESC LIMIT 21"),
        "≤ 3x",
    )


def deep_page_figures(reads: Reads, depth: int) -> tuple:
    """A keyset page `depth` records deep in the whole table; OFFSET to the same depth for comparison,
    which the API refuses. Returns the keyset ceiling's parameters."""
    use_time, last_id = reads.raw.execute(
        "SELECT use_time, id FROM llmusage_all ORDER BY use_time DESC, id DESC OFFSET %s LIMIT 1",
        (depth - 1,),
    ).fetchone()
    keyset = (use_time, use_time, last_id)
    reads.report.time(
        f"keyset page at depth {depth:,} (cursor)",
        reads.api("/api/llmusage/", reads.platform_key, cursor=_cursor_after(use_time, last_id)),
        reads.sql(KEYSET_SQL, keyset),
        "≤ 3x",
    )
    reads.api("/api/llmusage/", reads.platform_key, expect=400, page=depth // 20 + 1, page_size=20)()
    reads.report.time(
        f"OFFSET page at depth {depth:,}",
        None,
        reads.sql("SELECT * FROM llmusage_all ORDER BY use_time DESC, id DESC OFFSET %s LIMIT 20", (depth,)),
        "",
        "raw SQL only: the API answers page numbers past 10,000 records with a 400 naming `cursor`",
    )
    return keyset


def item_figures(reads: Reads) -> None:
    """One record by id, the newest of llmusage and the oldest of history (its ceiling prepared too)."""
    hot_id = reads.raw.execute("SELECT id FROM llmusage ORDER BY id DESC LIMIT 1").fetchone()[0]
    history_id = reads.raw.execute("SELECT id FROM llmusage_history ORDER BY id LIMIT 1").fetchone()[0]
    reads.report.time(
        "get-item (hot)",
        reads.api(f"/api/llmusage/{hot_id}/", reads.platform_key),
        reads.sql(ITEM_SQL, (hot_id,)),
        "≤ 3x",
    )
    reads.report.time(
        "get-item (history)",
        reads.api(f"/api/llmusage/{history_id}/", reads.platform_key),
        reads.sql(ITEM_SQL, (history_id,)),
        "≤ 3x",
    )
    reads.report.time(
        "get-item (history), raw SQL prepared",
        None,
        reads.sql(ITEM_SQL, (history_id,), prepared=True),
        "",
        "reference: the ceiling above as a prepared statement, which llmlog's own get-item is",
    )


def count_figures(reads: Reads) -> None:
    """The count of the biggest org's 30 days, and of the whole table (which the API estimates)."""
    reads.report.time(
        "count, biggest org, 30 days",
        reads.api("/api/llmusage/count/", reads.org_key, start_time=reads.since.isoformat()),
        reads.sql(
            "SELECT count(*) FROM llmusage_all WHERE userorgid = %s AND use_time >= %s",
            (reads.org, reads.since),
        ),
        "≤ 3x",
    )
    reads.report.time(
        "count, whole table",
        reads.api("/api/llmusage/count/", reads.platform_key),
        reads.sql("SELECT count(*) FROM llmusage_all"),
        "",
        "exact: the rollups' buckets + the open hours' rows (the planner's estimate only while no rollups "
        "are built); the ceiling counts the rows",
    )


def stats_figures(reads: Reads) -> None:
    """The 30-day stats of the biggest org and of all orgs (the dashboard's), and the org's RPM/TPM."""
    from llmlog.models import UsageRollup

    since = reads.since
    buckets = UsageRollup.objects.count()
    reads.report.time(
        "stats, biggest org, 30 days",
        reads.api("/api/llmusage/stats/", reads.org_key, start_time=since.isoformat()),
        reads.sql(
            f"SELECT {SUMS} FROM llmusage_all WHERE userorgid = %s AND use_time >= %s", (reads.org, since)
        ),
        "< 50 ms",
        f"rollups ({buckets:,} buckets in all) + rows of the open hour; the ceiling sums the rows",
    )
    reads.report.time(
        "stats, all orgs, 30 days (dashboard)",
        reads.api("/api/llmusage/stats/", reads.platform_key, start_time=since.isoformat()),
        reads.sql(f"SELECT {SUMS} FROM llmusage_all WHERE use_time >= %s", (since,)),
        "",
        "totals + by model + by day from rollups; the ceiling only the totals from the rows",
    )
    reads.report.time(
        "RPM/TPM, biggest org",
        reads.api("/api/llmusage/rates/", reads.org_key),
        reads.sql(
            "SELECT count(*), sum(total_tokens) FROM llmusage WHERE use_time >= %s AND userorgid = %s",
            (reads.now - timedelta(seconds=60), reads.org),
        ),
        "≤ 3x",
        "a minute within today is all in llmusage (history holds past days): app and ceiling read it alone",
    )


def search_figures(reads: Reads) -> str:
    """The search of a user id of the biggest org, of an error's text, and of nothing; returns the id."""
    userid = reads.raw.execute(
        "SELECT userid FROM llmusage_all WHERE userorgid = %s LIMIT 1", (reads.org,)
    ).fetchone()[0]
    for keyword, label in (
        (userid, "a user id"),
        ("Bad gateway", "error text"),
        ("no-such-thing", "no match"),
    ):
        reads.report.time(
            f"search: {label}",
            reads.api("/api/llmusage/search/", reads.platform_key, keyword=keyword),
            reads.sql(SEARCH_SQL, {"k": keyword, "like": f"%{keyword}%"}),
            "< 100 ms",
        )
    return userid


def print_plans(reads: Reads, keyset: tuple, userid: str) -> None:
    """--explain: the plans of the main queries' ceilings."""
    explain = [
        ("page 1 of the biggest org", PAGE_SQL, (reads.org,)),
        ("keyset page", KEYSET_SQL, keyset),
        ("search", SEARCH_SQL, {"k": userid, "like": f"%{userid}%"}),
    ]
    for name, query, params in explain:
        plan = reads.raw.execute("EXPLAIN (ANALYZE, COSTS OFF) " + query, params).fetchall()
        print(f"\n-- {name}\n" + "\n".join(line for (line,) in plan))


def print_report(figures: list[Figure]) -> None:
    print()
    print(markdown_table(figures))
    slow = [f.name for f in figures if f.target == "< 50 ms" and statistics.median(f.app) >= 50]
    if slow:
        print(f"\nover target: {', '.join(slow)}")


def parse_args() -> argparse.Namespace:
    parser = query_data_parser(__doc__, repeat=3)
    parser.add_argument("--explain", action="store_true", help="print the plans of the main queries")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    setup_django()
    from django.db import connection

    prepare_data(args.rows, args.reload)
    reads = Reads.open(max(args.repeat, 3))
    page_figures(reads)
    keyset = deep_page_figures(reads, min(DEPTH, args.rows // 2))
    item_figures(reads)
    count_figures(reads)
    stats_figures(reads)
    userid = search_figures(reads)
    if args.explain:
        print_plans(reads, keyset, userid)
    reads.raw.close()
    connection.close()
    print_report(reads.report.figures)


def _cursor_after(use_time, last_id) -> str:
    import base64
    import json

    position = {"o": "-use_time", "v": use_time.isoformat(), "id": str(last_id)}
    return base64.urlsafe_b64encode(json.dumps(position, separators=(",", ":")).encode()).decode().rstrip("=")


if __name__ == "__main__":
    main()
