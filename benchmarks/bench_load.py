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

from benchmarks.data import fill_usage  # noqa: E402
from benchmarks.load_ceiling import Rate, mix_ceiling_rounds  # noqa: E402
from benchmarks.processes import app_server, free_port  # noqa: E402
from benchmarks.report import Figure, markdown_table  # noqa: E402
from benchmarks.startup import bench_parser, setup_django  # noqa: E402

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


def percentile(values: list[float], p: float) -> float:
    """The value at the p-th percentile's rank of `values`; 0.0 when there are none."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))] if ordered else 0.0


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
        return percentile(self.by_kind.get(kind, []) if kind else self.latencies_ms, p)

    @property
    def error_rate(self) -> float:
        return len(self.errors) / max(1, self.requests)

    def add(
        self, latencies: list[tuple[str, float]], errors: list[str], acknowledged: dict[str, Decimal]
    ) -> None:
        """What one client sent: (kind, ms) of each request, its errors, the records acknowledged."""
        self.requests += len(latencies)
        self.errors += errors
        self.acknowledged.update(acknowledged)
        for kind, ms in latencies:
            self.latencies_ms.append(ms)
            self.by_kind.setdefault(kind, []).append(ms)


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


def next_request(
    rng: random.Random, tag: str, org: str, last_transno: str
) -> tuple[str, str, str, bytes | None, list[dict]]:
    """A client's next request of the mix: (kind, method, path, body, the records it sends). A search
    reads the client's last record written."""
    kind = rng.choices([k for k, _ in MIX], weights=[w for _, w in MIX])[0]
    if kind == "read":
        return kind, "GET", rng.choice(READS).format(transno=quote(last_transno)), None, []
    batch = [record(tag, org, rng) for _ in range(BULK_SIZE if kind == "bulk" else 1)]
    return kind, "POST", "/api/llmusage/", json.dumps(batch if kind == "bulk" else batch[0]).encode(), batch


def send(
    conn: http.client.HTTPConnection, method: str, path: str, body: bytes | None, headers: dict[str, str]
) -> tuple[int, bytes, http.client.HTTPConnection]:
    """One request: (status, payload, the connection to go on with). A broken connection answers
    status 0 and is replaced by a new one."""
    try:
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        return response.status, response.read(), conn
    except (OSError, http.client.HTTPException) as exc:
        conn.close()
        return 0, repr(exc).encode(), http.client.HTTPConnection(conn.host, conn.port, timeout=60)


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
            kind, method, path, body, batch = next_request(rng, result.tag, org, last_transno)
            started = time.perf_counter()
            status, payload, conn = send(conn, method, path, body, write_headers if batch else headers)
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
            result.add(mine, errors, acknowledged)

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


# --- the benchmark ---------------------------------------------------------------------------------


@dataclass
class LoadFigures:
    """The report's lines: rounds of the load against gunicorn, beside rounds of the raw statements."""

    rps: Figure
    p50: Figure
    p99: Figure
    p99_ingest: Figure
    p99_read: Figure
    lost: Figure
    errors: Figure

    @classmethod
    def named(cls, clients: int) -> "LoadFigures":
        return cls(
            rps=Figure(
                f"mixed requests/s ({clients} clients)",
                "req/s",
                note="ceiling: 70% raw INSERT+commit, 30% raw list SELECT, same threads",
            ),
            p50=Figure("latency p50, all requests", "ms"),
            p99=Figure("latency p99, all requests", "ms"),
            p99_ingest=Figure("latency p99, single-record ingest", "ms", note="ceiling: raw INSERT+commit"),
            p99_read=Figure("latency p99, reads", "ms", note="ceiling: the list's SELECT"),
            lost=Figure("lost records (acknowledged, not stored)", "records", target="0"),
            errors=Figure("error rate", "%", target="0"),
        )

    def add_round(self, result: LoadResult, missing: int) -> None:
        self.rps.app.append(result.requests_per_second)
        self.p50.app.append(result.percentile(50))
        self.p99.app.append(result.percentile(99))
        self.p99_ingest.app.append(result.percentile(99, "single"))
        self.p99_read.app.append(result.percentile(99, "read"))
        self.lost.app.append(missing)
        self.errors.app.append(100 * result.error_rate)

    def add_ceiling(self, insert: Rate, read: Rate) -> None:
        """One round of each raw statement: (statements per second, sorted latencies in ms)."""
        (rate, insert_latencies), (read_rate, read_latencies) = insert, read
        # The mix's time per request on the raw statements: writes (single and bulk) at the INSERT rate,
        # reads at the SELECT rate.
        self.rps.ceiling.append(1 / (0.7 / rate + 0.3 / read_rate))
        self.p99_ingest.ceiling.append(percentile(insert_latencies, 99))
        self.p99_read.ceiling.append(percentile(read_latencies, 99))

    def table(self) -> str:
        return markdown_table(
            [self.rps, self.p50, self.p99, self.p99_ingest, self.p99_read, self.lost, self.errors]
        )


def parse_args() -> argparse.Namespace:
    parser = bench_parser(__doc__)
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
    return parser.parse_args()


def org_keys() -> tuple[dict[str, str], str]:
    """({org: a member key of it that ingests and reads} for 20 orgs, the gateway's platform key)."""
    from llmlog.keys import api_key_create

    orgs = [f"org-{i:02d}" for i in range(20)]
    keys = {org: api_key_create(userorgid=org, role="member", scopes=["ingest", "read"])[1] for org in orgs}
    # The gateway's key: the records state their money, which only a platform key may (issue 14).
    gateway_key = api_key_create(userorgid="", role="admin", scopes=["ingest"])[1]
    return keys, gateway_key


def load_rounds(
    args: argparse.Namespace, keys: dict[str, str], gateway_key: str, figures: LoadFigures
) -> None:
    """--repeat rounds of the load against gunicorn, each checked against the database after."""
    from django.db import connection

    def run_sql(sql: str, params: list) -> tuple:
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            return cursor.fetchone()

    port = free_port()
    with app_server(port=port, workers=args.workers, threads=args.threads, worker_class=args.worker_class):
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
            figures.add_round(result, missing)
            print(
                f"round {round_number + 1}: {result.requests:,} requests in {result.seconds:.0f}s, "
                f"{len(result.acknowledged):,} records acknowledged, {missing} lost "
                f"(amount off by {missing_amount}), {extra} unacknowledged, {len(result.errors)} errors"
                + (f" e.g. {result.errors[0]}" if result.errors else ""),
                flush=True,
            )


def ceiling_rounds(args: argparse.Namespace, orgs: list[str], figures: LoadFigures) -> None:
    """--repeat rounds of the raw statements: the same number of threads, straight to PostgreSQL."""
    rounds = mix_ceiling_rounds(
        orgs=orgs, clients=args.clients, seconds=min(args.seconds, 10), repeat=args.repeat
    )
    for insert, read in rounds:
        figures.add_ceiling(insert, read)


def main() -> None:
    args = parse_args()
    setup_django()
    fill_usage(rows=args.rows, vacuum=False)
    keys, gateway_key = org_keys()
    figures = LoadFigures.named(args.clients)
    load_rounds(args, keys, gateway_key, figures)
    ceiling_rounds(args, sorted(keys), figures)
    print(figures.table())


if __name__ == "__main__":
    main()
