"""Ingest over HTTP (bulk and single records) beside the raw-SQL ceilings, on a table of --rows rows.

    python benchmarks/bench_ingest.py --rows 1000000
    python benchmarks/bench_ingest.py --rows 20000 --budgets   # each org with budgets to count in

The app runs under gunicorn (gthread workers, keep-alive) on PostgreSQL; clients are threads with one
persistent connection each. Ceilings, measured in the same run on the same table: psycopg COPY,
executemany in batches of 1000, and one INSERT per commit.
"""

import argparse
import json
import statistics
import sys
import time
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.data import ingest_setup, usage_columns_sql, usage_insert_sql, usage_values  # noqa: E402
from benchmarks.processes import app_server, free_port, post_bodies  # noqa: E402
from benchmarks.report import Figure, markdown_table, timed  # noqa: E402
from benchmarks.startup import rows_parser  # noqa: E402

PORT = free_port()
URL = "/api/llmusage/"


def record(tag: str, i: int) -> dict:
    """A gateway record of the usual size: who, what, tokens, money, outcome; of the last few minutes,
    as a gateway reports its calls."""
    return {
        "transno": f"bench-{tag}-{i}",
        "use_time": int(time.time()) - i % 300,
        "userid": f"user-{i % 500}",
        "username": f"User {i % 500}",
        "userorgid": f"org-{i % 20:02d}",
        "token_name": "default",
        "model_name": "gpt-4o",
        "llmid": "gpt-4o",
        "ownerid": "openai",
        "provider_type": "openai",
        "endpoint": "/v1/chat/completions",
        "is_stream": True,
        "input_tokens": 1000 + i % 700,
        "output_tokens": 200 + i % 300,
        "cached_tokens": 100,
        "amount": "0.01234",
        "cost": "0.01000",
        "responsed_seconds": 0.4,
        "finish_seconds": 2.1,
        "status": "success",
        "code": 200,
    }


# --- raw-SQL ceilings ------------------------------------------------------------------------------


def raw_rows(tag: str, count: int) -> list[tuple]:
    """Fully prepared tuples for every column of llmusage (`usage_columns_sql`), as the ceiling gets
    them for free."""
    from django.utils import timezone

    from llmlog.demo import demo_rows

    rows = []
    for i, row in enumerate(demo_rows(rows=count, seed=hash(tag) % 1000)):
        row["transno"] = f"raw-{tag}-{i}"
        row["created_at"] = timezone.now()
        rows.append(usage_values(row))
    return rows


def copy_ceiling(conn, tag: str, count: int) -> float:
    rows = raw_rows(tag, count)

    def run() -> None:
        with (
            conn.cursor() as cursor,
            cursor.copy(f"COPY llmusage ({usage_columns_sql()}) FROM STDIN") as copy,
        ):
            for row in rows:
                copy.write_row(row)
        conn.commit()

    return count / timed(run)


def executemany_ceiling(conn, tag: str, count: int) -> float:
    rows, sql = raw_rows(tag, count), usage_insert_sql()

    def run() -> None:
        for start in range(0, len(rows), 1000):
            with conn.cursor() as cursor:
                cursor.executemany(sql, rows[start : start + 1000])
            conn.commit()

    return count / timed(run)


def single_insert_ceiling(conn, tag: str, count: int) -> float:
    rows, sql = raw_rows(tag, count), usage_insert_sql()

    def run() -> None:
        for row in rows:
            with conn.cursor() as cursor:
                cursor.execute(sql, row)
            conn.commit()

    return count / timed(run)


# --- the app over HTTP -----------------------------------------------------------------------------


def single_records(*, port: int, tag: str, key: str, count: int, clients: int) -> tuple[float, float, float]:
    """`count` requests of one record(tag, i) each over `clients` connections: (req/s, p50 ms, p99 ms)."""
    bodies = [json.dumps(record(tag, i)).encode() for i in range(count)]
    elapsed, latencies = post_bodies(port=port, path=URL, bodies=bodies, key=key, clients=clients)
    cuts = statistics.quantiles(latencies, n=100)
    return count / elapsed, cuts[49], cuts[98]


def parse_args() -> argparse.Namespace:
    parser = rows_parser(__doc__, rows_help="rows in llmusage before measuring")
    parser.add_argument("--batches", type=int, default=30, help="1000-record batches per bulk measurement")
    parser.add_argument("--singles", type=int, default=4000, help="single-record requests per measurement")
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients for single records")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn worker processes")
    parser.add_argument(
        "--budgets",
        action="store_true",
        help="give every org the records name a blocking monthly budget and a per-key one, so that each "
        "ingest moves their counters (without: no org has a budget, and ingest only looks)",
    )
    return parser.parse_args()


def set_budgets(budgets: bool) -> None:
    """No org of record() with a budget, or with --budgets each with a blocking monthly budget and a
    per-key daily one, both too high to refuse: each ingest moves their counters."""
    from accounting.budgets import budget_create
    from accounting.models import Budget

    Budget.objects.filter(org__startswith="org-").delete()
    if budgets:
        for n in range(20):  # the orgs of record()
            budget_create(org=f"org-{n:02d}", limit=Decimal(10**9), action="block")
            budget_create(org=f"org-{n:02d}", token_name="default", limit=Decimal(10**9), period="day")


def main() -> None:
    args = parse_args()
    key, raw = ingest_setup(
        rows=args.rows, leftovers=("bench-", "raw-"), key_name="bench", scopes=["ingest", "read"]
    )
    set_budgets(args.budgets)

    bulk = Figure("bulk ingest, 1000-record batches over HTTP", "rows/s", target=">= 0.60 of COPY")
    many = Figure("executemany ceiling, batches of 1000", "rows/s", note="raw SQL only")
    single = Figure("single-record ingest over HTTP", "req/s", target=">= 0.50 of one INSERT per commit")
    p50 = Figure(f"single-record latency p50, {args.clients} clients", "ms")
    p99 = Figure(f"single-record latency p99, {args.clients} clients", "ms", target="< 20 ms")
    batch_size = 1000
    with raw, app_server(port=PORT, workers=args.workers):
        for rep in range(args.repeat):
            tag = f"{int(time.time())}-{rep}"
            bulk.ceiling.append(copy_ceiling(raw, f"copy-{tag}", args.batches * batch_size))
            many.app.append(executemany_ceiling(raw, f"many-{tag}", args.batches * batch_size))
            bodies = [
                json.dumps([record(f"b-{tag}-{b}", i) for i in range(batch_size)]).encode()
                for b in range(args.batches)
            ]
            elapsed, _ = post_bodies(port=PORT, path=URL, bodies=bodies, key=key, clients=args.workers)
            bulk.app.append(args.batches * batch_size / elapsed)

            single.ceiling.append(single_insert_ceiling(raw, f"one-{tag}", args.singles // 2))
            rate, p50_ms, p99_ms = single_records(
                port=PORT, tag=f"s-{tag}", key=key, count=args.singles, clients=args.clients
            )
            single.app.append(rate)
            p50.app.append(p50_ms)
            p99.app.append(p99_ms)
            print(f"run {rep + 1}/{args.repeat} done", flush=True)
    print()
    print(markdown_table([bulk, many, single, p50, p99]))


if __name__ == "__main__":
    main()
