"""The compatibility dialects (OneUptime, new-api, AI Proxy) beside the raw SQL they stand for.

    python benchmarks/bench_dialects.py --rows 1000000   (on BENCH_DATABASE_URL, default llmlog_bench)

Same data as bench_query.py (its prepare_data: demo records over 30 days, the older half moved to
llmusage_history, rollups built), reused when it is there. Each figure is one request end to end through
Django with django.test.Client and an API key of the biggest org (or a platform key); its ceiling is the
same queries sent with psycopg in the same run (for a list: the page and its total).
"""

import hashlib
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.bench_query import prepare_data  # noqa: E402
from benchmarks.data import OrgReads  # noqa: E402
from benchmarks.report import markdown_table  # noqa: E402
from benchmarks.startup import query_data_parser, setup_django  # noqa: E402

if TYPE_CHECKING:
    import psycopg
    from django.test import Client

GATEWAY_KEY = "sk-bench-gateway-key"
GATEWAY_KEY_RECORDS = 2_000


@dataclass
class Dialects(OrgReads):
    """OrgReads, with some records of the biggest org made with one gateway key (its hash) and a test
    client."""

    key_hash: str = field(init=False)
    client: "Client" = field(init=False)

    def __post_init__(self) -> None:
        from django.test import Client

        self.key_hash = mark_gateway_key_records(self.raw, self.org)
        self.client = Client()

    @property
    def org_sql(self) -> str:
        return f"userorgid = '{self.org}'"

    @property
    def page_sql(self) -> str:
        return (
            f"SELECT * FROM llmusage_all WHERE {self.org_sql} AND status = 'success' "
            "ORDER BY use_time DESC, id DESC"
        )

    @property
    def total_sql(self) -> str:
        return f"SELECT count(*) FROM llmusage_all WHERE {self.org_sql} AND status = 'success'"

    def sql(self, *statements: tuple[str, tuple]) -> Callable[[], object]:
        return lambda: [self.raw.execute(query, params).fetchall() for query, params in statements]

    def call(
        self, method: str, path: str, api_key: str | None, body: dict | None = None, **params
    ) -> Callable:
        headers = {"HTTP_AUTHORIZATION": f"Bearer {api_key}"} if api_key else {}

        def run() -> object:
            if method == "post":
                response = self.client.post(path, json.dumps(body or {}), "application/json", **headers)
            else:
                response = self.client.get(path, params, **headers)
            if response.status_code != 200:
                raise RuntimeError(f"{path}: {response.status_code} {response.content[:300]!r}")
            return response

        return run


def mark_gateway_key_records(raw: "psycopg.Connection", org: str) -> str:
    """Some records of `org` made with one gateway key (demo data has none), for /api/log/token: hot
    and history alike. Returns the key's hash."""
    key_hash = hashlib.sha256(GATEWAY_KEY.encode()).hexdigest()
    for table in ("llmusage", "llmusage_history"):
        raw.execute(
            f"UPDATE {table} SET token_key_hash = %s WHERE id IN "
            f"(SELECT id FROM {table} WHERE userorgid = %s AND token_key_hash = '' LIMIT %s)",
            (key_hash, org, GATEWAY_KEY_RECORDS // 2),
        )
    return key_hash


def oneuptime_figures(dialects: Dialects) -> str:
    """OneUptime's get-list, get-item and count; returns the model name the count filters on."""
    seed_body = {
        "select": {"costInUSDCents": True, "isGlobalProvider": True, "projectId": True, "status": True},
        "query": {"status": "Success"},
        "sort": {"createdAt": -1},
    }
    dialects.report.time(
        f"OneUptime get-list, page 1 of the biggest org ({dialects.org_rows:,} records) + count",
        dialects.call("post", "/api/llm-log/get-list?skip=0&limit=10", dialects.org_key, seed_body),
        dialects.sql((dialects.page_sql + " LIMIT 10", ()), (dialects.total_sql, ())),
        "≤ 3x",
    )
    record_id = dialects.raw.execute(
        f"SELECT id FROM llmusage_history WHERE {dialects.org_sql} LIMIT 1"
    ).fetchone()[0]
    dialects.report.time(
        "OneUptime get-item (history)",
        dialects.call(
            "post", f"/api/llm-log/{record_id}/get-item", dialects.org_key, {"select": {"totalTokens": True}}
        ),
        dialects.sql((f"SELECT * FROM llmusage_all WHERE id = %s AND {dialects.org_sql}", (record_id,))),
        "≤ 3x",
    )
    model = dialects.raw.execute(
        f"SELECT model_name FROM llmusage WHERE {dialects.org_sql} LIMIT 1"
    ).fetchone()[0]
    week_ago = dialects.now - timedelta(days=7)
    between = {"_type": "InBetween", "startValue": week_ago.isoformat(), "endValue": dialects.now.isoformat()}
    dialects.report.time(
        "OneUptime count: a model over 7 days",
        dialects.call(
            "post",
            "/api/llm-log/count",
            dialects.org_key,
            {"query": {"modelName": model, "createdAt": between}},
        ),
        dialects.sql(
            (
                f"SELECT count(*) FROM llmusage_all WHERE {dialects.org_sql} AND model_name = %s "
                "AND use_time BETWEEN %s AND %s",
                (model, week_ago, dialects.now),
            )
        ),
        "≤ 3x",
    )
    return model


def newapi_log_figures(dialects: Dialects) -> None:
    """new-api's own log page, its stat over 30 days, and the log of one gateway key."""
    month_ago = dialects.now - timedelta(days=30)
    dialects.report.time(
        "new-api /api/log/self, page 1 (type=2) + total",
        dialects.call("get", "/api/log/self", dialects.org_key, p=1, page_size=20, type=2),
        dialects.sql((dialects.page_sql + " LIMIT 20", ()), (dialects.total_sql, ())),
        "≤ 3x",
    )
    dialects.report.time(
        "new-api /api/log/self/stat, 30 days",
        dialects.call(
            "get", "/api/log/self/stat", dialects.org_key, start_timestamp=int(month_ago.timestamp())
        ),
        dialects.sql(
            (
                f"SELECT sum(amount) FROM llmusage_all WHERE {dialects.org_sql} AND use_time >= %s",
                (month_ago,),
            ),
            (
                f"SELECT count(*), sum(total_tokens) FROM llmusage_all WHERE {dialects.org_sql} "
                "AND status = 'success' AND use_time >= %s",
                (dialects.now - timedelta(seconds=60),),
            ),
        ),
        "< 50 ms",
        "quota from the hourly rollups + the open hour's rows; the ceiling sums the rows",
    )
    dialects.report.time(
        f"new-api /api/log/token ({GATEWAY_KEY_RECORDS:,} records of the key)",
        dialects.call("get", "/api/log/token", None, key=GATEWAY_KEY),
        dialects.sql(
            (
                "SELECT * FROM llmusage_all WHERE token_key_hash = %s "
                "ORDER BY use_time DESC, id DESC LIMIT 100",
                (dialects.key_hash,),
            )
        ),
        "≤ 3x",
        "both read the token_key_hash index",
    )


def newapi_search_figures(dialects: Dialects, model: str) -> None:
    """new-api's search: a keyword that is a prefix of the content ("gpt-4o: 120 prompt + ...") reduces
    to model_name LIKE 'k%' (the varchar_pattern_ops indexes of migration 0008) or, past the model name,
    to model_name = 'gpt-4o' and the content built in SQL; a keyword that matches nothing is probed away."""
    prefix = model[:3]
    newest_by_prefix = (
        "SELECT * FROM llmusage_all WHERE model_name LIKE %s AND status <> 'failed' "
        "ORDER BY use_time DESC, id DESC LIMIT 100"
    )
    dialects.report.time(
        f"new-api /api/log/search?keyword={prefix} (a content prefix, every org)",
        dialects.call("get", "/api/log/search", dialects.platform_key, keyword=prefix),
        dialects.sql((newest_by_prefix, (prefix + "%",))),
        "< 100 ms",
    )
    dialects.report.time(
        f"new-api /api/log/self/search?keyword={model}: 1 (past the model name)",
        dialects.call("get", "/api/log/self/search", dialects.org_key, keyword=f"{model}: 1"),
        dialects.sql(
            (
                f"SELECT * FROM llmusage_all WHERE {dialects.org_sql} AND model_name = %s "
                "AND status <> 'failed' AND input_tokens::text LIKE '1%%' "
                "ORDER BY use_time DESC, id DESC LIMIT 100",
                (model,),
            )
        ),
        "< 100 ms",
    )
    dialects.report.time(
        "new-api /api/log/self/search?keyword=no-such-thing (nothing matches)",
        dialects.call("get", "/api/log/self/search", dialects.org_key, keyword="no-such-thing"),
        dialects.sql(
            (newest_by_prefix.replace("WHERE", f"WHERE {dialects.org_sql} AND"), ("no-such-thing%",))
        ),
        "< 100 ms",
    )


def aiproxy_figures(dialects: Dialects) -> None:
    """AI Proxy's search of one group over 7 days, and of every org's failed calls: page, total, facets."""
    from llmlog.api.dialects.aiproxy.params import FACET_SAMPLE

    week_ago = dialects.now - timedelta(days=7)
    facets = (
        "SELECT DISTINCT model_name, token_name, channel_id FROM (SELECT model_name, token_name, channel_id "
        f"FROM llmusage_all WHERE {dialects.org_sql} AND use_time >= %s "
        f"ORDER BY use_time DESC LIMIT {FACET_SAMPLE}) s"
    )
    week_ms = int(week_ago.timestamp() * 1000)
    dialects.report.time(
        "AI Proxy /api/log/{group}/search, 7 days, page 1 + total + facets",
        dialects.call(
            "get", f"/api/log/{dialects.org}/search", dialects.org_key, start_timestamp=week_ms, per_page=10
        ),
        dialects.sql(
            (
                f"SELECT * FROM llmusage_all WHERE {dialects.org_sql} AND use_time >= %s "
                "ORDER BY use_time DESC, id DESC LIMIT 10",
                (week_ago,),
            ),
            (f"SELECT count(*) FROM llmusage_all WHERE {dialects.org_sql} AND use_time >= %s", (week_ago,)),
            (facets, (week_ago,)),
        ),
        "≤ 3x",
        f"facets over the newest {FACET_SAMPLE:,} records of the range",
    )
    dialects.report.time(
        "AI Proxy /api/logs/search, all orgs (platform), page 1 + total + facets",
        dialects.call("get", "/api/logs/search", dialects.platform_key, code_type="error"),
        dialects.sql(
            (
                "SELECT * FROM llmusage_all WHERE status = 'failed' ORDER BY use_time DESC, id DESC LIMIT 10",
                (),
            ),
            ("SELECT count(*) FROM llmusage_all WHERE status = 'failed'", ()),
            (facets.replace(f"{dialects.org_sql} AND ", ""), (dialects.now - timedelta(days=30 + 3650),)),
        ),
        "≤ 3x",
    )


def main() -> None:
    args = query_data_parser(__doc__, repeat=5).parse_args()
    setup_django()
    from django.db import connection

    prepare_data(args.rows, args.reload)
    dialects = Dialects.open(max(args.repeat, 3))
    model = oneuptime_figures(dialects)
    newapi_log_figures(dialects)
    newapi_search_figures(dialects, model)
    aiproxy_figures(dialects)
    dialects.raw.close()
    connection.close()
    print()
    print(markdown_table(dialects.report.figures))


if __name__ == "__main__":
    main()
