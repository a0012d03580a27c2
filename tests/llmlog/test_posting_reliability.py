"""Posting under real concurrency and real crashes: worker processes running the management command
against the test database (PostgreSQL: SKIP LOCKED and row locks are what is being tested)."""

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from decimal import Decimal
from pathlib import Path

import pytest
from django.db import connection, transaction

from accounting.ledger import ledger_check
from accounting.models import AccountingFailure, LedgerTransaction
from llmlog.models import JobRun, LLMUsage
from tests.factories import balance, insert_usage, make_accounts, usage_row
from tests.servers import connect_to_the_test_database, url_of_the_test_database

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

ROOT = Path(__file__).resolve().parents[2]
ORGS = tuple(f"org-{i:02d}" for i in range(20))
OWNERS = ("openai", "anthropic", "google", "deepseek", "alibaba")


def start_worker(*args: str) -> subprocess.Popen:
    env = dict(os.environ, DJANGO_SETTINGS_MODULE="tests.settings", DATABASE_URL=url_of_the_test_database())
    return subprocess.Popen(
        [sys.executable, "manage.py", "account_pending_usage", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(process: subprocess.Popen, timeout: float = 300) -> str:
    out, err = process.communicate(timeout=timeout)
    assert process.returncode == 0, f"worker failed ({process.returncode}):\n{err[-3000:]}"
    return out


def assert_books_balance() -> None:
    check = ledger_check()
    assert check.total == 0
    assert check.unbalanced_transactions == []
    assert check.balance_mismatches == {}


def load_mixed_queue() -> dict[str, int]:
    """10,000 pending records: most post, some cannot (no account), some are not billable, and one
    org ("tight") can afford exactly 166 of its 300 records, whatever order the workers take them in."""
    make_accounts(customers=(*ORGS, "tight"), owners=OWNERS, funds=Decimal(0))
    from accounting.ledger import ledger_topup

    for org in ORGS:
        ledger_topup(org=org, amount=Decimal(1000))
    ledger_topup(org="tight", amount=Decimal("1.0"))  # 166 x 0.006 = 0.996
    rows = [
        usage_row(userorgid=ORGS[i % len(ORGS)], ownerid=OWNERS[i % len(OWNERS)], cost=Decimal("0.00480"))
        for i in range(9_400)
    ]
    rows += [usage_row(userorgid="tight", cost=Decimal(0)) for _ in range(300)]
    rows += [usage_row(userorgid="nobody") for _ in range(200)]
    rows += [usage_row(amount=Decimal(0), cost=Decimal(0)) for _ in range(100)]
    for start in range(0, len(rows), 2000):
        insert_usage(rows[start : start + 2000])
    return {"accounted": 9_400 + 166, "insufficient_balance": 300 - 166, "no_account": 200, "skipped": 100}


@pytest.mark.parametrize("workers", [2, 4])
def test_concurrent_workers_post_every_record_exactly_once(workers):
    expected = load_mixed_queue()

    processes = [start_worker("--batch-size", "250") for _ in range(workers)]
    for process in processes:
        finish(process)

    statuses = Counter(LLMUsage.objects.values_list("accounting_status", flat=True))
    assert statuses == {
        "accounted": expected["accounted"],
        "failed": expected["insufficient_balance"] + expected["no_account"],
        "skipped": expected["skipped"],
    }
    usage_transactions = LedgerTransaction.objects.filter(kind="usage")
    assert usage_transactions.count() == expected["accounted"]
    assert set(usage_transactions.values_list("usage_id", flat=True)) == set(
        LLMUsage.objects.filter(accounting_status="accounted").values_list("id", flat=True)
    )
    assert Counter(AccountingFailure.objects.values_list("error_code", flat=True)) == {
        "insufficient_balance": expected["insufficient_balance"],
        "no_account": expected["no_account"],
    }
    assert balance("tight") == Decimal("0.00400")  # never below its (zero) credit limit
    assert_books_balance()
    # No record was claimed twice: the runs' claims add up to the queue.
    runs = JobRun.objects.filter(job="account_pending_usage")
    assert runs.count() == workers
    assert all(run.status == "succeeded" for run in runs)
    assert sum(run.counts["claimed"] for run in runs) == 10_000


def blocked_backend_pid(timeout: float = 60) -> int:
    """The worker's database backend once it waits on an account lock, i.e. in the middle of a batch."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                "AND wait_event_type = 'Lock' AND query LIKE %s",
                ["%accounting_account%FOR UPDATE%"],
            )
            row = cursor.fetchone()
        if row:
            return row[0]
        time.sleep(0.05)
    raise AssertionError("the worker never reached the account lock")


def wait_until_gone(pid: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", [pid])
            if cursor.fetchone() is None:
                return
        time.sleep(0.05)
    raise AssertionError(f"backend {pid} of the killed worker is still there")


def pending_not_locked() -> int:
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM (SELECT id FROM llmusage WHERE accounting_status = 'pending' "
            "FOR UPDATE SKIP LOCKED) AS free"
        )
        return cursor.fetchone()[0]


def test_a_worker_killed_in_the_middle_of_a_batch_loses_nothing_and_doubles_nothing():
    make_accounts(funds=Decimal(1000))
    insert_usage([usage_row() for _ in range(3_000)])
    finish(start_worker("--batch-size", "500", "--max-batches", "2"))
    assert LedgerTransaction.objects.filter(kind="usage").count() == 1_000

    # Hold the platform account's lock from outside, so the next worker stops inside its first batch:
    # it has claimed 500 records and waits to lock the accounts.
    blocker = connect_to_the_test_database()
    blocker.execute("SELECT id FROM accounting_account WHERE kind = 'platform' FOR UPDATE")
    victim = start_worker("--batch-size", "500")
    try:
        pid = blocked_backend_pid()
        assert pending_not_locked() == 1_500  # 500 of the 2,000 pending are the victim's batch
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=30)
    finally:
        blocker.rollback()
        blocker.close()
    wait_until_gone(pid)

    # The killed batch wrote nothing and its records are free again.
    assert LedgerTransaction.objects.filter(kind="usage").count() == 1_000
    assert LLMUsage.objects.filter(accounting_status="pending").count() == 2_000
    assert pending_not_locked() == 2_000
    assert JobRun.objects.filter(job="account_pending_usage", status="running").count() == 1  # the victim's

    out = finish(start_worker("--batch-size", "500"))

    assert '"accounted": 2000' in out
    assert LLMUsage.objects.exclude(accounting_status="accounted").count() == 0
    assert LedgerTransaction.objects.filter(kind="usage").count() == 3_000
    assert LedgerTransaction.objects.filter(kind="usage").values("usage_id").distinct().count() == 3_000
    assert balance("acme") == Decimal(1000) - 3_000 * Decimal("0.006")
    assert_books_balance()


def blocked_backend_pids(count: int, timeout: float = 60) -> set[int]:
    """The backends of `count` workers all waiting on an account lock at once, each inside its batch."""
    deadline = time.monotonic() + timeout
    seen: set[int] = set()
    while time.monotonic() < deadline:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                "AND wait_event_type = 'Lock' AND query LIKE %s",
                ["%accounting_account%FOR UPDATE%"],
            )
            seen = {row[0] for row in cursor.fetchall()}
        if len(seen) >= count:
            return seen
        time.sleep(0.05)
    raise AssertionError(f"{count} workers never waited on the account locks together (saw {len(seen)})")


def test_a_retry_racing_a_posting_run_posts_once():
    """The scheduled retry and an operator's retry of the same failures at once: each record once."""
    make_accounts(funds=Decimal(0))
    insert_usage([usage_row() for _ in range(2_000)])
    finish(start_worker())
    assert AccountingFailure.objects.count() == 2_000
    from accounting.ledger import ledger_topup

    ledger_topup(org="acme", amount=Decimal(100))
    env = dict(os.environ, DJANGO_SETTINGS_MODULE="tests.settings", DATABASE_URL=url_of_the_test_database())
    # Hold the platform account's lock from outside so that the three runs are provably at the same
    # point at once: each has claimed a batch of failed records and waits to lock the accounts.
    blocker = connect_to_the_test_database()
    blocker.execute("SELECT id FROM accounting_account WHERE kind = 'platform' FOR UPDATE")
    try:
        retries = [
            subprocess.Popen(
                [sys.executable, "manage.py", "retry_failed_accounting", "--all", "--batch-size", "100"],
                cwd=ROOT,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(3)
        ]
        assert len(blocked_backend_pids(3)) == 3
        # Three claims held together, none of them on the same record: 300 of the failed are taken.
        assert LLMUsage.objects.filter(accounting_status="failed").count() == 2_000  # nothing committed
        assert failed_not_locked() == 1_700
    finally:
        blocker.rollback()
        blocker.close()
    runs = [json.loads(finish(process).strip().splitlines()[-1]) for process in retries]

    assert LLMUsage.objects.filter(accounting_status="accounted").count() == 2_000
    assert LedgerTransaction.objects.filter(kind="usage").count() == 2_000
    assert AccountingFailure.objects.exclude(status="resolved").count() == 0
    assert balance("acme") == Decimal(100) - 2_000 * Decimal("0.006")
    assert_books_balance()
    # Each record was claimed by exactly one run, and the runs met: later ones found records busy.
    assert sum(run["retried"] for run in runs) == 2_000
    assert sum(run["accounted"] for run in runs) == 2_000
    assert sum(run["busy"] for run in runs) >= 300  # the second waiter skipped 100, the third 200


def failed_not_locked() -> int:
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM (SELECT id FROM llmusage WHERE accounting_status = 'failed' "
            "FOR UPDATE SKIP LOCKED) AS free"
        )
        return cursor.fetchone()[0]
