"""Each posting task once through a real Celery worker, on the configured broker."""

from datetime import timedelta
from decimal import Decimal

from django.utils import timezone

from accounting.ledger import ledger_topup
from accounting.models import AccountingFailure
from llmlog.models import JobRun, LLMUsage
from llmlog.tasks import account_pending_usage, retry_failed_accounting
from tests.factories import insert_usage, make_accounts, usage_row


def test_the_posting_tasks_run_on_a_real_worker(celery_worker_process):
    make_accounts(funds=Decimal("0.01"))
    insert_usage([usage_row(transno="one"), usage_row(transno="two")])

    posted = account_pending_usage.delay().get(timeout=60)

    assert (posted["accounted"], posted["failed"]) == (1, 1)
    assert JobRun.objects.get(job="account_pending_usage").status == "succeeded"
    # Ingest's debounced call: nothing pending, nothing done, no JobRun.
    assert account_pending_usage.delay(only_if_pending=True).get(timeout=60) == {"claimed": 0}
    assert JobRun.objects.filter(job="account_pending_usage").count() == 1

    ledger_topup(org="acme", amount=Decimal(1))
    AccountingFailure.objects.update(next_retry_at=timezone.now() - timedelta(seconds=1))
    retried = retry_failed_accounting.delay().get(timeout=60)

    assert (retried["retried"], retried["accounted"]) == (1, 1)
    assert set(LLMUsage.objects.values_list("accounting_status", flat=True)) == {"accounted"}
    assert AccountingFailure.objects.get().status == "resolved"
    assert JobRun.objects.get(job="retry_failed_accounting").counts["accounted"] == 1
