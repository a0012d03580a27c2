"""Posting's time bound (`max_seconds`): a run stops taking batches once it is spent, so the
every-minute task fits its minute; what it leaves stays pending for the next run."""

import threading
import time
from decimal import Decimal

import pytest
from django.db import connection

from accounting.models import LedgerTransaction
from llmlog.models import JobRun, LLMUsage
from llmlog.posting import account_pending_usage, retry_failed_accounting
from tests.factories import insert_usage, make_accounts, usage_row
from tests.llmlog.test_posting_reliability import blocked_backend_pids
from tests.servers import connect_to_the_test_database


@pytest.mark.django_db
def test_a_spent_bound_takes_no_batch_and_leaves_everything_pending():
    make_accounts(funds=Decimal(1000))
    insert_usage([usage_row() for _ in range(5)])

    counts = account_pending_usage(batch_size=2, max_seconds=0)

    assert (counts["batches"], counts["claimed"]) == (0, 0)
    assert LLMUsage.objects.filter(accounting_status="pending").count() == 5
    assert JobRun.objects.get(job="account_pending_usage").status == "succeeded"
    assert account_pending_usage(batch_size=2, max_seconds=60)["accounted"] == 5  # a later run posts them


@pytest.mark.django_db
def test_a_spent_bound_retries_nothing():
    make_accounts(funds=Decimal(0))
    insert_usage([usage_row() for _ in range(3)])
    account_pending_usage()

    result = retry_failed_accounting(force=True, max_seconds=0)

    assert result.counts["batches"] == 0 and result.outcomes == {}
    assert LLMUsage.objects.filter(accounting_status="failed").count() == 3


def hold_the_platform_account(seconds: float) -> None:
    """Lock the platform account from another session, and keep it `seconds` after a run waits on it."""
    held = threading.Event()

    def hold() -> None:
        try:
            with connect_to_the_test_database() as blocker:
                blocker.execute("SELECT id FROM accounting_account WHERE kind = 'platform' FOR UPDATE")
                held.set()
                blocked_backend_pids(1)
                time.sleep(seconds)
                blocker.rollback()
        finally:
            connection.close()  # this thread's own Django connection, opened by blocked_backend_pids

    threading.Thread(target=hold, daemon=True).start()
    assert held.wait(timeout=10)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_run_stops_between_batches_once_its_time_is_spent():
    """The first batch is held on the account lock longer than the bound: the run finishes that batch
    (a batch is never cut in half) and takes no other."""
    make_accounts(funds=Decimal(1000))
    insert_usage([usage_row() for _ in range(30)])
    hold_the_platform_account(1.0)

    counts = account_pending_usage(batch_size=10, max_seconds=0.5)

    assert (counts["batches"], counts["claimed"], counts["accounted"]) == (1, 10, 10)
    assert LedgerTransaction.objects.filter(kind="usage").count() == 10
    assert LLMUsage.objects.filter(accounting_status="pending").count() == 20


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_retry_run_stops_between_batches_once_its_time_is_spent():
    make_accounts(funds=Decimal(0))
    insert_usage([usage_row() for _ in range(30)])
    account_pending_usage()
    from accounting.ledger import ledger_topup

    ledger_topup(org="acme", amount=Decimal(100))
    hold_the_platform_account(1.0)

    result = retry_failed_accounting(force=True, batch_size=10, max_seconds=0.5)

    assert (result.counts["batches"], result.counts["retried"], result.counts["accounted"]) == (1, 10, 10)
    assert LLMUsage.objects.filter(accounting_status="failed").count() == 20
