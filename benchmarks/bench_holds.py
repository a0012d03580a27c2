"""Hold admission latency: p50 and p99 of `accounting.holds.hold_grant` at 8 concurrent clients.

    BENCH_DATABASE_URL=postgres://postgres@127.0.0.1:5432/llmlog_bench .venv/bin/python \
        benchmarks/bench_holds.py --rows 1000000

On top of `--rows` demo usage records, one org with a funded customer account, a blocking monthly
budget on the whole org and a blocking `total` budget on one of its keys (new-api's token quota), both
seeded from the rows. Eight threads, each with its own database connection, admit holds for that org
as fast as they can (every admission locks the same account and budgets: the worst case, one busy
org), and release each hold right after, as a call that finished would settle it (so eight calls are
in flight at most). The ceiling is the lock alone: eight clients each running BEGIN; SELECT ... FROM
accounting_account WHERE id = the org's account FOR UPDATE; COMMIT over raw psycopg connections.

Target (issue 19): p99 < 20 ms at 1M rows with 8 concurrent clients.
"""

import argparse
import queue
import sys
import threading
import time
import uuid
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import Figure, fill_usage, markdown_table, raw_connection, setup_django  # noqa: E402

ORG = "bench-holds"
CLIENTS = 8


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def prepare() -> int:
    from accounting.budgets import budget_create
    from accounting.ledger import account_create, ledger_topup
    from accounting.models import Account, Budget, Hold

    Hold.objects.filter(org=ORG).delete()
    Budget.objects.filter(org=ORG).delete()
    account = Account.objects.filter(org=ORG, kind="customer").first() or account_create(
        org=ORG, kind="customer"
    )
    if account.balance < Decimal(10**9):
        ledger_topup(org=ORG, amount=Decimal(10**9))
    budget_create(org=ORG, limit=Decimal(10**9), period="month", action="block")
    budget_create(org=ORG, token_name="key-1", limit=Decimal(10**9), period="total", action="block")
    return account.pk


def run_clients(work, calls_per_client: int) -> list[float]:
    """Latencies (ms) of every call of `work(n)` across CLIENTS threads started together."""
    latencies: list[float] = []
    lock = threading.Lock()
    barrier = threading.Barrier(CLIENTS)

    def client(index: int) -> None:
        mine = []
        state = work.setup() if hasattr(work, "setup") else None
        barrier.wait()
        for n in range(calls_per_client):
            started = time.perf_counter()
            work(state, index, n)
            mine.append((time.perf_counter() - started) * 1000)
        if hasattr(work, "teardown"):
            work.teardown(state)
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return latencies


class Admission:
    """One gateway client: admit a hold, then release it (outside the timing, as the call would)."""

    def __init__(self) -> None:
        self.run = uuid.uuid4().hex[:8]

    def setup(self):
        return None

    def __call__(self, state, index: int, n: int) -> None:
        from accounting.holds import HoldRequest, hold_grant

        request = HoldRequest(
            org=ORG,
            transno=f"bench-{self.run}-{index}-{n}",
            amount=Decimal("0.01"),
            token_name="key-1",
            model_name="gpt-4o",
        )
        hold, _ = hold_grant(request=request)
        self.pending.put(hold)

    def teardown(self, state) -> None:
        from django.db import connection

        connection.close()


class LockCeiling:
    def __init__(self, account_id: int) -> None:
        self.account_id = account_id

    def setup(self):
        return raw_connection()

    def __call__(self, conn, index: int, n: int) -> None:
        with conn.transaction():
            conn.execute("SELECT balance FROM accounting_account WHERE id = %s FOR UPDATE", [self.account_id])

    def teardown(self, conn) -> None:
        conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--calls", type=int, default=300, help="admissions per client per repetition")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    setup_django()
    fill_usage(rows=args.rows)
    account_id = prepare()

    from accounting.holds import hold_release
    from accounting.models import Hold

    p50, p99, c50, c99 = [], [], [], []
    for _ in range(args.repeat):
        admission = Admission()
        admission.pending = queue.Queue()

        def release_loop(admission: Admission = admission) -> None:  # a finished call settles its hold
            from django.db import connection

            while (hold := admission.pending.get()) is not None:
                hold_release(hold=hold)
            connection.close()

        releaser = threading.Thread(target=release_loop)
        releaser.start()
        app = run_clients(admission, args.calls)
        admission.pending.put(None)
        releaser.join()
        ceiling = run_clients(LockCeiling(account_id), args.calls)
        p50.append(percentile(app, 0.50))
        p99.append(percentile(app, 0.99))
        c50.append(percentile(ceiling, 0.50))
        c99.append(percentile(ceiling, 0.99))
        print(
            f"admission p50 {p50[-1]:.2f} ms p99 {p99[-1]:.2f} ms; lock p50 {c50[-1]:.2f} p99 {c99[-1]:.2f}"
        )
    Hold.objects.filter(org=ORG).delete()

    note = f"{CLIENTS} clients, one org, 2 blocking budgets, {args.rows:,} usage rows"
    print(
        markdown_table(
            [
                Figure("hold admission p50", "ms", p50, c50, "", note),
                Figure("hold admission p99", "ms", p99, c99, "< 20 ms", note),
            ]
        )
    )
    print(f"(medians over {args.repeat} repetitions of {CLIENTS} x {args.calls} admissions)", file=sys.stderr)


if __name__ == "__main__":
    main()
