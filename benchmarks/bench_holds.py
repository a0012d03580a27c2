"""Hold admission latency: p50 and p99 of `accounting.holds.hold_grant` at 8 concurrent clients.

    BENCH_DATABASE_URL=postgres://postgres@127.0.0.1:5432/llmlog_bench .venv/bin/python \
        benchmarks/bench_holds.py --rows 1000000

On top of `--rows` demo usage records, each org has a funded customer account, a blocking monthly
budget on the whole org and a blocking `total` budget on one of its keys (new-api's token quota), both
seeded from the rows. Eight client processes (gateway workers are processes, each with its own
database connection) admit holds as fast as they can, and release each hold right after, outside the
timing, as a call that finished would settle it. Three cases:

- one client alone: admission's own latency, nothing else on the cores (the reference for the two
  others on a 2-core machine, where eight client processes and their backends queue for CPU);
- one org per client: the usual case, where admissions of different orgs do not wait for each other;
- one busy org: all eight clients admit for the same org, so every admission queues on its account
  row. No design can beat the row lock here: each holder must commit (a WAL flush) before the next
  may read its hold, so the ceiling is the bare lock.

The ceiling of each case is the lock alone: the same clients each running BEGIN; SELECT ... FROM
accounting_account WHERE id = their org's account FOR UPDATE; COMMIT over raw psycopg connections.

Target (issue 19): p99 < 20 ms at 1M rows with 8 concurrent clients.
"""

import argparse
import multiprocessing
import sys
import time
import uuid
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.data import fill_usage, raw_connection  # noqa: E402
from benchmarks.report import Figure, markdown_table  # noqa: E402
from benchmarks.startup import setup_django  # noqa: E402

ORG_PREFIX = "bench-holds"
CLIENTS = 8


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def prepare(org: str) -> int:
    """The org's funded account and its two blocking budgets; returns the account's id."""
    from accounting.accounts import account_create
    from accounting.budgets import budget_create
    from accounting.ledger import ledger_topup
    from accounting.models import Account, Budget, Hold

    Hold.objects.filter(org=org).delete()
    Budget.objects.filter(org=org).delete()
    account = Account.objects.filter(org=org, kind="customer").first() or account_create(
        org=org, kind="customer"
    )
    if account.balance < Decimal(10**9):
        ledger_topup(org=org, amount=Decimal(10**9))
    budget_create(org=org, limit=Decimal(10**9), period="month", action="block")
    budget_create(org=org, token_name="key-1", limit=Decimal(10**9), period="total", action="block")
    return account.pk


def admit(org: str, calls: int, start, results) -> None:
    """One client process: `calls` admissions for `org`, each released after it is timed."""
    setup_django(migrate=False)
    from accounting.holds import HoldRequest, hold_grant, hold_release

    run = uuid.uuid4().hex[:8]
    latencies = []
    start.wait()
    for n in range(calls):
        request = HoldRequest(
            org=org,
            transno=f"bench-{run}-{n}",
            amount=Decimal("0.01"),
            token_name="key-1",
            model_name="gpt-4o",
        )
        began = time.perf_counter()
        hold, _ = hold_grant(request=request)
        latencies.append((time.perf_counter() - began) * 1000)
        hold_release(hold=hold)
    results.put(latencies)


def lock(account_id: int, calls: int, start, results) -> None:
    """One ceiling client: the bare row lock of the same account, committed."""
    setup_django(migrate=False)
    conn = raw_connection()
    latencies = []
    start.wait()
    for _ in range(calls):
        began = time.perf_counter()
        with conn.transaction():
            conn.execute("SELECT balance FROM accounting_account WHERE id = %s FOR UPDATE", [account_id])
        latencies.append((time.perf_counter() - began) * 1000)
    conn.close()
    results.put(latencies)


def run_clients(target, per_client_args: list[tuple], calls: int) -> list[float]:
    """Latencies (ms) of every call of CLIENTS processes released together."""
    context = multiprocessing.get_context("spawn")
    start, results = context.Barrier(len(per_client_args)), context.Queue()
    processes = [
        context.Process(target=target, args=(*args, calls, start, results)) for args in per_client_args
    ]
    for process in processes:
        process.start()
    latencies = [value for _ in processes for value in results.get()]
    for process in processes:
        process.join()
    return latencies


def measure(orgs: list[str], accounts: dict[str, int], calls: int, repeat: int, note: str) -> list[Figure]:
    p50, p99, c50, c99 = [], [], [], []
    for _ in range(repeat):
        app = run_clients(admit, [(org,) for org in orgs], calls)
        ceiling = run_clients(lock, [(accounts[org],) for org in orgs], calls)
        p50.append(percentile(app, 0.50))
        p99.append(percentile(app, 0.99))
        c50.append(percentile(ceiling, 0.50))
        c99.append(percentile(ceiling, 0.99))
        print(
            f"{note}: admission p50 {p50[-1]:.2f} p99 {p99[-1]:.2f} ms; "
            f"lock p50 {c50[-1]:.2f} p99 {c99[-1]:.2f}"
        )
    return [
        Figure("hold admission p50", "ms", p50, c50, "", note),
        Figure("hold admission p99", "ms", p99, c99, "< 20 ms", note),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--calls", type=int, default=300, help="admissions per client per repetition")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    setup_django()
    fill_usage(rows=args.rows)
    orgs = [f"{ORG_PREFIX}-{n}" for n in range(CLIENTS)]
    accounts = {org: prepare(org) for org in orgs}

    # One client first: admission's own latency, with no other process on the cores.
    figures = measure(orgs[:1], accounts, args.calls, args.repeat, "1 client")
    figures += measure(orgs, accounts, args.calls, args.repeat, f"{CLIENTS} clients, one org each")
    figures += measure(
        [orgs[0]] * CLIENTS, accounts, args.calls, args.repeat, f"{CLIENTS} clients, one busy org"
    )

    from accounting.models import Hold

    Hold.objects.filter(org__startswith=ORG_PREFIX).delete()
    print(markdown_table(figures))
    print(
        f"(2 blocking budgets per org, {args.rows:,} usage rows; medians over {args.repeat} repetitions of "
        f"{CLIENTS} x {args.calls} admissions)",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
