"""The tasks' retry policy through a real worker: a database that drops the connection mid-run (a
failover, a restart) is an OperationalError, which the task retries on a fresh connection."""

from decimal import Decimal

import pytest

from accounting.models import LedgerTransaction
from llmlog.models import JobRun, LLMUsage
from llmlog.tasks import account_pending_usage
from tests.factories import insert_usage, make_accounts, usage_row
from tests.llmlog.test_posting_reliability import blocked_backend_pids
from tests.servers import connect_to_the_test_database

pytestmark = pytest.mark.postgres


def test_a_connection_lost_mid_run_is_retried_and_the_retry_posts_everything(celery_worker_process):
    make_accounts(funds=Decimal(1000))
    insert_usage([usage_row() for _ in range(20)])
    blocker = connect_to_the_test_database()
    try:
        # Stop the worker inside its first batch, then end its database session from outside.
        blocker.execute("SELECT id FROM accounting_account WHERE kind = 'platform' FOR UPDATE")
        result = account_pending_usage.delay()
        (pid,) = blocked_backend_pids(1)
        with connect_to_the_test_database(autocommit=True) as ops:
            ops.execute("SELECT pg_terminate_backend(%s)", [pid])
    finally:
        blocker.rollback()
        blocker.close()

    counts = result.get(timeout=90)  # the retry's answer: retry_backoff=5 s, jittered

    assert (counts["claimed"], counts["accounted"]) == (20, 20)
    assert LedgerTransaction.objects.filter(kind="usage").count() == 20
    assert not LLMUsage.objects.exclude(accounting_status="accounted").exists()
    runs = {run.status: run for run in JobRun.objects.filter(job="account_pending_usage")}
    assert set(runs) == {"failed", "succeeded"}  # the first attempt, then its retry
    assert runs["failed"].error.startswith("OperationalError")
