"""The compatibility dialects (OneUptime, new-api, AI Proxy) beside the raw SQL they stand for.

    python benchmarks/bench_dialects.py --rows 1000000   (on BENCH_DATABASE_URL, default llmlog_bench)

Same data as bench_query.py (its prepare_data: demo records over 30 days, the older half moved to
llmusage_history, rollups built), reused when it is there. Each figure is one request end to end through
Django with django.test.Client and an API key of the biggest org (or a platform key); its ceiling is the
same queries sent with psycopg in the same run (for a list: the page and its total).
"""

import argparse
import hashlib
import json
import sys
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.bench_query import prepare_data  # noqa: E402
from benchmarks.common import Figure, markdown_table, measure, setup_django  # noqa: E402

GATEWAY_KEY = "sk-bench-gateway-key"
GATEWAY_KEY_RECORDS = 2_000


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
    from django.db import connection
    from django.test import Client
    from django.utils import timezone

    from llmlog.api.dialects.aiproxy.params import FACET_SAMPLE
    from llmlog.keys import api_key_create

    prepare_data(args.rows, args.reload)
    # Unprepared, as Django sends its queries (psycopg would prepare a statement after 5 runs).
    raw = psycopg.connect(os.environ["DATABASE_URL"], autocommit=True, prepare_threshold=None)

    def sql(*statements: tuple[str, tuple]) -> Callable[[], object]:
        return lambda: [raw.execute(query, params).fetchall() for query, params in statements]

    biggest_org, org_rows = raw.execute(
        "SELECT userorgid, count(*) FROM llmusage_all GROUP BY 1 ORDER BY 2 DESC LIMIT 1"
    ).fetchone()
    # Some records made with one gateway key (demo data has none), for /api/log/token.
    key_hash = hashlib.sha256(GATEWAY_KEY.encode()).hexdigest()
    for table in ("llmusage", "llmusage_history"):
        raw.execute(
            f"UPDATE {table} SET token_key_hash = %s WHERE id IN "
            f"(SELECT id FROM {table} WHERE userorgid = %s AND token_key_hash = '' LIMIT %s)",
            (key_hash, biggest_org, GATEWAY_KEY_RECORDS // 2),
        )
    _, org_key = api_key_create(userorgid=biggest_org, role="reader", scopes=["read"], name="bench")
    _, platform_key = api_key_create(userorgid="", role="admin", scopes=["read"], name="bench")
    client = Client()

    def call(method: str, path: str, api_key: str | None, body: dict | None = None, **params) -> Callable:
        headers = {"HTTP_AUTHORIZATION": f"Bearer {api_key}"} if api_key else {}

        def run() -> object:
            if method == "post":
                response = client.post(path, json.dumps(body or {}), "application/json", **headers)
            else:
                response = client.get(path, params, **headers)
            if response.status_code != 200:
                raise RuntimeError(f"{path}: {response.status_code} {response.content[:300]!r}")
            return response

        return run

    now = timezone.now()
    week_ago = now - timedelta(days=7)
    month_ago = now - timedelta(days=30)
    figures: list[Figure] = []

    def figure(name: str, app: Callable, ceiling: Callable, target: str = "", note: str = "") -> None:
        figures.append(Figure(name, "ms", *measure(repeat, app, ceiling), target, note))
        print(f"measured: {name}", flush=True)

    org = f"userorgid = '{biggest_org}'"
    page = f"SELECT * FROM llmusage_all WHERE {org} AND status = 'success' ORDER BY use_time DESC, id DESC"
    total = f"SELECT count(*) FROM llmusage_all WHERE {org} AND status = 'success'"

    # --- OneUptime ---
    seed_body = {
        "select": {"costInUSDCents": True, "isGlobalProvider": True, "projectId": True, "status": True},
        "query": {"status": "Success"},
        "sort": {"createdAt": -1},
    }
    figure(
        f"OneUptime get-list, page 1 of the biggest org ({org_rows:,} records) + count",
        call("post", "/api/llm-log/get-list?skip=0&limit=10", org_key, seed_body),
        sql((page + " LIMIT 10", ()), (total, ())),
        "≤ 3x",
    )
    record_id = raw.execute(f"SELECT id FROM llmusage_history WHERE {org} LIMIT 1").fetchone()[0]
    figure(
        "OneUptime get-item (history)",
        call("post", f"/api/llm-log/{record_id}/get-item", org_key, {"select": {"totalTokens": True}}),
        sql((f"SELECT * FROM llmusage_all WHERE id = %s AND {org}", (record_id,))),
        "≤ 3x",
    )
    model = raw.execute(f"SELECT model_name FROM llmusage WHERE {org} LIMIT 1").fetchone()[0]
    between = {"_type": "InBetween", "startValue": week_ago.isoformat(), "endValue": now.isoformat()}
    figure(
        "OneUptime count: a model over 7 days",
        call("post", "/api/llm-log/count", org_key, {"query": {"modelName": model, "createdAt": between}}),
        sql(
            (
                f"SELECT count(*) FROM llmusage_all WHERE {org} AND model_name = %s "
                "AND use_time BETWEEN %s AND %s",
                (model, week_ago, now),
            )
        ),
        "≤ 3x",
    )

    # --- new-api ---
    figure(
        "new-api /api/log/self, page 1 (type=2) + total",
        call("get", "/api/log/self", org_key, p=1, page_size=20, type=2),
        sql((page + " LIMIT 20", ()), (total, ())),
        "≤ 3x",
    )
    figure(
        "new-api /api/log/self/stat, 30 days",
        call("get", "/api/log/self/stat", org_key, start_timestamp=int(month_ago.timestamp())),
        sql(
            (f"SELECT sum(amount) FROM llmusage_all WHERE {org} AND use_time >= %s", (month_ago,)),
            (
                f"SELECT count(*), sum(total_tokens) FROM llmusage_all WHERE {org} AND status = 'success' "
                "AND use_time >= %s",
                (now - timedelta(seconds=60),),
            ),
        ),
        "< 50 ms",
        "quota from the hourly rollups + the open hour's rows; the ceiling sums the rows",
    )
    figure(
        f"new-api /api/log/token ({GATEWAY_KEY_RECORDS:,} records of the key)",
        call("get", "/api/log/token", None, key=GATEWAY_KEY),
        sql(
            (
                "SELECT * FROM llmusage_all WHERE token_key_hash = %s "
                "ORDER BY use_time DESC, id DESC LIMIT 100",
                (key_hash,),
            )
        ),
        "≤ 3x",
        "both read the token_key_hash index",
    )

    # new-api's search: a keyword that is a prefix of the content ("gpt-4o: 120 prompt + ...") reduces to
    # model_name LIKE 'k%' (the varchar_pattern_ops indexes of migration 0008) or, past the model name,
    # to model_name = 'gpt-4o' and the content built in SQL; a keyword that matches nothing is probed away.
    prefix = model[:3]
    newest_by_prefix = (
        "SELECT * FROM llmusage_all WHERE model_name LIKE %s AND status <> 'failed' "
        "ORDER BY use_time DESC, id DESC LIMIT 100"
    )
    figure(
        f"new-api /api/log/search?keyword={prefix} (a content prefix, every org)",
        call("get", "/api/log/search", platform_key, keyword=prefix),
        sql((newest_by_prefix, (prefix + "%",))),
        "< 100 ms",
    )
    figure(
        f"new-api /api/log/self/search?keyword={model}: 1 (past the model name)",
        call("get", "/api/log/self/search", org_key, keyword=f"{model}: 1"),
        sql(
            (
                f"SELECT * FROM llmusage_all WHERE {org} AND model_name = %s AND status <> 'failed' "
                "AND input_tokens::text LIKE '1%%' ORDER BY use_time DESC, id DESC LIMIT 100",
                (model,),
            )
        ),
        "< 100 ms",
    )
    figure(
        "new-api /api/log/self/search?keyword=no-such-thing (nothing matches)",
        call("get", "/api/log/self/search", org_key, keyword="no-such-thing"),
        sql((newest_by_prefix.replace("WHERE", f"WHERE {org} AND"), ("no-such-thing%",))),
        "< 100 ms",
    )

    # --- AI Proxy ---
    facets = (
        "SELECT DISTINCT model_name, token_name, channel_id FROM (SELECT model_name, token_name, channel_id "
        f"FROM llmusage_all WHERE {org} AND use_time >= %s "
        f"ORDER BY use_time DESC LIMIT {FACET_SAMPLE}) s"
    )
    week_ms = int(week_ago.timestamp() * 1000)
    figure(
        "AI Proxy /api/log/{group}/search, 7 days, page 1 + total + facets",
        call("get", f"/api/log/{biggest_org}/search", org_key, start_timestamp=week_ms, per_page=10),
        sql(
            (
                f"SELECT * FROM llmusage_all WHERE {org} AND use_time >= %s ORDER BY use_time DESC, id DESC "
                "LIMIT 10",
                (week_ago,),
            ),
            (f"SELECT count(*) FROM llmusage_all WHERE {org} AND use_time >= %s", (week_ago,)),
            (facets, (week_ago,)),
        ),
        "≤ 3x",
        f"facets over the newest {FACET_SAMPLE:,} records of the range",
    )
    figure(
        "AI Proxy /api/logs/search, all orgs (platform), page 1 + total + facets",
        call("get", "/api/logs/search", platform_key, code_type="error"),
        sql(
            (
                "SELECT * FROM llmusage_all WHERE status = 'failed' ORDER BY use_time DESC, id DESC LIMIT 10",
                (),
            ),
            ("SELECT count(*) FROM llmusage_all WHERE status = 'failed'", ()),
            (facets.replace(f"{org} AND ", ""), (month_ago - timedelta(days=3650),)),
        ),
        "≤ 3x",
    )

    raw.close()
    connection.close()
    print()
    print(markdown_table(figures))


if __name__ == "__main__":
    main()
