"""Load: 50 concurrent clients on loopback, mixed ingest and reads, against gunicorn; nothing lost.

    python benchmarks/bench_load.py --rows 1000000 --seconds 20

Each client is a thread with one keep-alive connection and its own org key (20 orgs). A client sends,
in a fixed random mix: one record (60%), a batch of 20 records (10%), and reads (30%: the list, count,
stats, search, new-api's self log and AI Proxy's search). Every record carries a unique transno and an
amount of up to 5 places; what the server acknowledged (2xx) is remembered. After each round the
database must hold exactly the acknowledged records: same count, same sum of amount (lost = 0), and
every answer must have been a 2xx (error rate 0). The round is repeated (median, min, max).

Ceilings, measured in the same run with as many threads on raw psycopg connections for 10 seconds each:
one INSERT per commit (what a single-record ingest must do) and the list read's SELECT.
A 20-second round sends some 1,500 requests at a million rows (more on a smaller table), so each p99
rests on the slowest dozen or so (the reads' on about five), and the raw statements run over 10,000 times in
10 seconds: longer rounds only lengthen `make bench`.

tests/test_load.py runs the same load for 15 seconds in CI (`run_load`).
"""

import argparse
import http.client
import json
import random
import socket
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from urllib.parse import quote

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import Figure, markdown_table  # noqa: E402

CLIENTS = 50
BULK_SIZE = 20
# Share of each kind of request in the mix.
MIX = (("single", 0.6), ("bulk", 0.1), ("read", 0.3))
READS = (
    "/api/llmusage/?page_size=20",
    "/api/llmusage/count/?status=success",
    "/api/llmusage/stats/?model_name=gpt-4o",
    "/api/llmusage/search/?keyword={transno}",
    "/api/log/self?page_size=20",
    "/api/logs/search?per_page=20",
)


@dataclass
class LoadResult:
    tag: str
    seconds: float
    requests: int = 0
    errors: list[str] = field(default_factory=list)
    latencies_ms: list[float] = field(default_factory=list)
    by_kind: dict[str, list[float]] = field(default_factory=dict)
    acknowledged: dict[str, Decimal] = field(default_factory=dict)  # transno -> amount

    @property
    def requests_per_second(self) -> float:
        return self.requests / self.seconds

    def percentile(self, p: float, kind: str | None = None) -> float:
        values = sorted(self.by_kind.get(kind, []) if kind else self.latencies_ms)
        if not values:
            return 0.0
        return values[min(len(values) - 1, int(p / 100 * len(values)))]

    @property
    def error_rate(self) -> float:
        return len(self.errors) / max(1, self.requests)


def record(tag: str, org: str, rng: random.Random) -> dict:
    amount = Decimal(rng.randrange(0, 10**8)) / 10**5  # up to 999.99999, 5 places
    return {
        "transno": f"load-{tag}-{uuid.uuid4().hex}",
        "userorgid": org,
        "userid": f"user-{rng.randrange(50)}",
        "model_name": rng.choice(("gpt-4o", "claude-sonnet", "deepseek-chat")),
        "input_tokens": rng.randrange(10, 5000),
        "output_tokens": rng.randrange(1, 2000),
        "amount": str(amount),
        "cost": str(amount / 2),
        "status": "success",
        "code": 200,
    }


def run_load(
    *,
    port: int,
    keys: dict[str, str],
    seconds: float,
    clients: int = CLIENTS,
    tag: str | None = None,
    seed: int = 1,
    ingest_key: str | None = None,
) -> LoadResult:
    """`clients` threads, each with its own keep-alive connection and an org key from `keys` (org ->
    key, shared round robin), send the mix for `seconds`. Returns what was sent and acknowledged.

    The records state their amount and cost, which only a platform key may: with `ingest_key` (the
    platform gateway's key) the writes go with it, each record in its client's org; reads use the org key."""
    result = LoadResult(tag=tag or uuid.uuid4().hex[:8], seconds=seconds)
    lock = threading.Lock()
    orgs = sorted(keys)
    deadline = time.monotonic() + seconds
    start_gate = threading.Barrier(clients + 1)

    def client(number: int) -> None:
        rng = random.Random(seed * 1000 + number)
        org = orgs[number % len(orgs)]
        headers = {"Authorization": f"Bearer {keys[org]}", "Content-Type": "application/json"}
        write_headers = {**headers, "Authorization": f"Bearer {ingest_key or keys[org]}"}
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        mine: list[tuple[str, float]] = []
        acknowledged: dict[str, Decimal] = {}
        errors: list[str] = []
        last_transno = "none"
        start_gate.wait()
        while time.monotonic() < deadline:
            kind = rng.choices([k for k, _ in MIX], weights=[w for _, w in MIX])[0]
            if kind == "read":
                method, path, body = "GET", rng.choice(READS).format(transno=quote(last_transno)), None
                batch: list[dict] = []
            else:
                batch = [record(result.tag, org, rng) for _ in range(BULK_SIZE if kind == "bulk" else 1)]
                method, path = "POST", "/api/llmusage/"
                body = json.dumps(batch if kind == "bulk" else batch[0]).encode()
            started = time.perf_counter()
            try:
                conn.request(method, path, body=body, headers=write_headers if batch else headers)
                response = conn.getresponse()
                payload = response.read()
                status = response.status
            except (OSError, http.client.HTTPException) as exc:
                status, payload = 0, repr(exc).encode()
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            mine.append((kind, (time.perf_counter() - started) * 1000))
            if not 200 <= status < 300:
                errors.append(f"{method} {path} {status}: {payload[:200]!r}")
                continue
            for item in batch:  # 2xx: all stored (201), or already there (200): acknowledged
                acknowledged[item["transno"]] = Decimal(item["amount"])
            if batch:
                last_transno = batch[-1]["transno"]
        conn.close()
        with lock:
            result.requests += len(mine)
            result.errors += errors
            result.acknowledged.update(acknowledged)
            for kind, ms in mine:
                result.latencies_ms.append(ms)
                result.by_kind.setdefault(kind, []).append(ms)

    threads = [threading.Thread(target=client, args=(n,), daemon=True) for n in range(clients)]
    for thread in threads:
        thread.start()
    start_gate.wait()
    started = time.monotonic()
    for thread in threads:
        thread.join(timeout=seconds + 120)
    result.seconds = time.monotonic() - started
    return result


def stored(tag: str, run_sql: Callable[[str, list], tuple]) -> tuple[int, Decimal]:
    """(count, sum of amount) of the records a load run `tag` stored, hot or history."""
    count, total = run_sql(
        "SELECT count(*), coalesce(sum(amount), 0) FROM llmusage_all WHERE transno LIKE %s",
        [f"load-{tag}-%"],
    )
    return count, Decimal(total)


def lost_records(result: LoadResult, run_sql: Callable[[str, list], tuple]) -> tuple[int, Decimal, int]:
    """(acknowledged records missing, their amount, records stored but never acknowledged)."""
    count, total = stored(result.tag, run_sql)
    acknowledged = len(result.acknowledged)
    missing = max(0, acknowledged - count)
    extra = max(0, count - acknowledged)
    return missing, sum(result.acknowledged.values(), Decimal(0)) - total, extra


# --- raw ceilings ----------------------------------------------------------------------------------


def raw_ceiling(*, clients: int, seconds: float, statement: Callable[[object, random.Random], None]):
    """`clients` threads on their own psycopg connections run `statement` (one per commit) for
    `seconds`: (statements per second, latencies in ms)."""
    from benchmarks.common import raw_connection

    latencies: list[float] = []
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def worker(number: int) -> None:
        rng = random.Random(number)
        conn = raw_connection()
        mine = []
        while time.monotonic() < deadline:
            started = time.perf_counter()
            statement(conn, rng)
            conn.commit()
            mine.append((time.perf_counter() - started) * 1000)
        conn.close()
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(clients)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return len(latencies) / (time.monotonic() - started), sorted(latencies)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows in llmusage before the load")
    parser.add_argument("--seconds", type=float, default=20, help="length of each round")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--clients", type=int, default=CLIENTS)
    parser.add_argument(
        "--workers", type=int, default=None, help="gunicorn worker processes (default: config/gunicorn.py's)"
    )
    parser.add_argument(
        "--worker-class",
        default=None,
        help="gunicorn worker class, to compare (default: config/gunicorn.py's)",
    )
    parser.add_argument(
        "--threads", type=int, default=None, help="threads per gthread worker (default: config/gunicorn.py's)"
    )
    args = parser.parse_args()

    from benchmarks.common import raw_connection, setup_django, start_app_server, stop_app_server

    setup_django()
    from django.db import connection

    from llmlog.demo import load_demo_data
    from llmlog.ingest.storage import JSON_COLUMNS, USAGE_FIELDS
    from llmlog.keys import api_key_create
    from llmlog.models import LLMUsage

    have = LLMUsage.objects.count()
    if have < args.rows:
        print(f"loading {args.rows - have:,} demo rows", flush=True)
        load_demo_data(rows=args.rows - have)
    orgs = [f"org-{i:02d}" for i in range(20)]
    keys = {org: api_key_create(userorgid=org, role="member", scopes=["ingest", "read"])[1] for org in orgs}
    # The gateway's key: the records state their money, which only a platform key may (issue 14).
    gateway_key = api_key_create(userorgid="", role="admin", scopes=["ingest"])[1]

    def run_sql(sql: str, params: list) -> tuple:
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            return cursor.fetchone()

    rps, p50, p99, p99_ingest, p99_read, lost, errors = (Figure("", "") for _ in range(7))
    rps.name, rps.unit = f"mixed requests/s ({args.clients} clients)", "req/s"
    p50.name, p50.unit = "latency p50, all requests", "ms"
    p99.name, p99.unit = "latency p99, all requests", "ms"
    p99_ingest.name, p99_ingest.unit = "latency p99, single-record ingest", "ms"
    p99_read.name, p99_read.unit = "latency p99, reads", "ms"
    lost.name, lost.unit, lost.target = "lost records (acknowledged, not stored)", "records", "0"
    errors.name, errors.unit, errors.target = "error rate", "%", "0"

    with socket.socket() as probe:  # a free loopback port
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = start_app_server(
        port=port, workers=args.workers, threads=args.threads, worker_class=args.worker_class
    )
    try:
        for round_number in range(args.repeat):
            result = run_load(
                port=port,
                keys=keys,
                seconds=args.seconds,
                clients=args.clients,
                seed=round_number,
                ingest_key=gateway_key,
            )
            missing, missing_amount, extra = lost_records(result, run_sql)
            rps.app.append(result.requests_per_second)
            p50.app.append(result.percentile(50))
            p99.app.append(result.percentile(99))
            p99_ingest.app.append(result.percentile(99, "single"))
            p99_read.app.append(result.percentile(99, "read"))
            lost.app.append(missing)
            errors.app.append(100 * result.error_rate)
            print(
                f"round {round_number + 1}: {result.requests:,} requests in {result.seconds:.0f}s, "
                f"{len(result.acknowledged):,} records acknowledged, {missing} lost "
                f"(amount off by {missing_amount}), {extra} unacknowledged, {len(result.errors)} errors"
                + (f" e.g. {result.errors[0]}" if result.errors else ""),
                flush=True,
            )
    finally:
        stop_app_server(server)

    # Ceilings: the same number of threads, straight to PostgreSQL.
    names = [f.attname for f in USAGE_FIELDS]
    columns = ", ".join(f'"{f.column}"' for f in USAGE_FIELDS)
    placeholders = ", ".join(["%s"] * len(names))
    insert = (
        f"INSERT INTO llmusage ({columns}) VALUES ({placeholders}) "
        "ON CONFLICT (transno, userorgid) DO NOTHING"
    )
    from django.utils import timezone

    from llmlog.demo import demo_rows

    template = next(demo_rows(rows=1))

    def insert_one(conn, rng: random.Random) -> None:
        row = dict(
            template, id=uuid.uuid4(), transno=f"raw-load-{uuid.uuid4().hex}", created_at=timezone.now()
        )
        values = [json.dumps(row[n]) if n in JSON_COLUMNS else row[n] for n in names]
        conn.execute(insert, values)

    def select_page(conn, rng: random.Random) -> None:
        conn.execute(
            "SELECT * FROM llmusage_all WHERE userorgid = %s ORDER BY use_time DESC, id DESC LIMIT 21",
            [rng.choice(orgs)],
        ).fetchall()

    ceiling_seconds = min(args.seconds, 10)
    for _ in range(args.repeat):
        rate, insert_latencies = raw_ceiling(
            clients=args.clients, seconds=ceiling_seconds, statement=insert_one
        )
        read_rate, read_latencies = raw_ceiling(
            clients=args.clients, seconds=ceiling_seconds, statement=select_page
        )
        # The mix's time per request on the raw statements: writes (single and bulk) at the INSERT rate,
        # reads at the SELECT rate.
        rps.ceiling.append(1 / (0.7 / rate + 0.3 / read_rate))
        p99_ingest.ceiling.append(_p(insert_latencies, 99))
        p99_read.ceiling.append(_p(read_latencies, 99))
    rps.note = "ceiling: 70% raw INSERT+commit, 30% raw list SELECT, same threads"
    p99_ingest.note = "ceiling: raw INSERT+commit"
    p99_read.note = "ceiling: the list's SELECT"
    with raw_connection() as conn:
        conn.execute("DELETE FROM llmusage WHERE transno LIKE 'raw-load-%'")
    print(markdown_table([rps, p50, p99, p99_ingest, p99_read, lost, errors]))


def _p(values: list[float], p: float) -> float:
    return values[min(len(values) - 1, int(p / 100 * len(values)))] if values else 0.0


if __name__ == "__main__":
    main()
