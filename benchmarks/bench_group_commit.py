"""Single-record ingest at --clients clients over HTTP, group commit on and off, beside one INSERT per
commit (the raw-SQL ceiling bench_ingest measures), all in the same run on a table of --rows rows.

    python benchmarks/bench_group_commit.py --rows 1000000

Two gunicorn servers with production's worker model (config/gunicorn.py) run side by side, one with
LLMLOG_INGEST_GROUP_COMMIT on and one with it off; each repetition measures the ceiling, then each
server in turn, so a busy moment of the shared machine hits all three alike. Also reported: the
records per commit under group commit (distinct transaction ids of the rows written), and one INSERT
per commit from --clients raw connections at once, where PostgreSQL already shares WAL flushes among
concurrent commits.
"""

import argparse
import contextlib
import os
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.bench_ingest import raw_rows, single_insert_ceiling, single_records  # noqa: E402
from benchmarks.data import ingest_setup, raw_connection, usage_insert_sql  # noqa: E402
from benchmarks.processes import app_server, free_port, run_threads  # noqa: E402
from benchmarks.report import Figure, markdown_table  # noqa: E402
from benchmarks.startup import rows_parser  # noqa: E402

PORTS = {"on": free_port(), "off": free_port()}


def concurrent_single_inserts(tag: str, count: int, clients: int) -> float:
    """rows/s of one INSERT per commit from `clients` raw connections at once."""
    rows, sql = raw_rows(tag, count), usage_insert_sql()
    connections = [raw_connection() for _ in range(clients)]

    def run(conn, share) -> None:
        for row in share:
            conn.execute(sql, row)
            conn.commit()

    threads = [
        threading.Thread(target=run, args=(conn, rows[i::clients])) for i, conn in enumerate(connections)
    ]
    elapsed = run_threads(threads)
    for conn in connections:
        conn.close()
    return count / elapsed


def records_per_commit(prefix: str) -> float:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*)::float / count(DISTINCT xmin::text) FROM llmusage WHERE transno LIKE %s",
            [prefix + "%"],
        )
        return cursor.fetchone()[0]


def parse_args() -> argparse.Namespace:
    parser = rows_parser(__doc__, rows_help="rows in llmusage before measuring")
    parser.add_argument("--singles", type=int, default=4000, help="single-record requests per measurement")
    parser.add_argument("--clients", type=int, default=8)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    key, raw = ingest_setup(
        rows=args.rows, leftovers=("bench-gc-", "raw-gc-"), key_name="bench", scopes=["ingest", "read"]
    )

    target = ">= 1.5 of one INSERT per commit"
    grouped = Figure(f"single-record ingest, {args.clients} clients, group commit", "req/s", target=target)
    alone = Figure(f"single-record ingest, {args.clients} clients, one commit each", "req/s")
    parallel = Figure(f"one INSERT per commit, {args.clients} raw connections", "rows/s", note="raw SQL only")
    p50 = {
        side: Figure(f"single-record p50, {args.clients} clients, group commit {side}", "ms")
        for side in PORTS
    }
    p99 = {
        side: Figure(
            f"single-record p99, {args.clients} clients, group commit {side}",
            "ms",
            target="< 20 ms" if side == "on" else "",
        )
        for side in PORTS
    }
    per_commit = Figure("records per commit, group commit on", "records")
    with raw, contextlib.ExitStack() as servers:
        for side, port in PORTS.items():
            os.environ["LLMLOG_INGEST_GROUP_COMMIT"] = "true" if side == "on" else "false"
            servers.enter_context(app_server(port=port))
        for rep in range(args.repeat):
            tag = f"{int(time.time())}-{rep}"
            ceiling = single_insert_ceiling(raw, f"gc-one-{tag}", args.singles // 2)
            grouped.ceiling.append(ceiling)
            alone.ceiling.append(ceiling)
            parallel.app.append(concurrent_single_inserts(f"gc-par-{tag}", args.singles // 2, args.clients))
            for side, port in PORTS.items():
                rate, p50_ms, p99_ms = single_records(
                    port=port, tag=f"gc-{side}-{tag}", key=key, count=args.singles, clients=args.clients
                )
                (grouped if side == "on" else alone).app.append(rate)
                p50[side].app.append(p50_ms)
                p99[side].app.append(p99_ms)
                if side == "on":
                    per_commit.app.append(records_per_commit(f"bench-gc-{side}-{tag}"))
            print(f"run {rep + 1}/{args.repeat} done", flush=True)
    print()
    print(
        markdown_table([grouped, alone, parallel, p50["on"], p99["on"], p50["off"], p99["off"], per_commit])
    )


if __name__ == "__main__":
    main()
