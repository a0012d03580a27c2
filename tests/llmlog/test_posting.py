import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from accounting import usage_posting
from accounting.ledger import ledger_check, ledger_topup
from accounting.models import AccountingFailure, LedgerTransaction
from llmlog import tasks
from llmlog.ingest.service import usage_ingest
from llmlog.models import JobRun, LLMUsage, ModelPrice
from llmlog.posting import account_pending_usage, retry_failed_accounting
from tests.factories import balance, insert_usage, make_accounts, usage_payload, usage_row

pytestmark = pytest.mark.django_db


def status_of(usage_id) -> str:
    return LLMUsage.objects.get(pk=usage_id).accounting_status


def test_pending_records_are_posted_and_marked_accounted():
    make_accounts(funds=Decimal(10))
    ids = insert_usage([usage_row() for _ in range(3)])

    counts = account_pending_usage()

    assert counts == {
        "claimed": 3,
        "accounted": 3,
        "already_accounted": 0,
        "skipped": 0,
        "failed": 0,
        "batches": 1,
    }
    records = LLMUsage.objects.filter(pk__in=ids)
    assert {r.accounting_status for r in records} == {"accounted"}
    assert all(r.accounted_at is not None for r in records)
    assert set(LedgerTransaction.objects.filter(kind="usage").values_list("usage_id", flat=True)) == set(ids)
    assert balance("acme") == Decimal(10) - 3 * Decimal("0.006")
    assert ledger_check().ok


def test_a_second_run_finds_nothing_to_post():
    make_accounts()
    insert_usage([usage_row()])
    account_pending_usage()

    assert account_pending_usage()["claimed"] == 0
    assert LedgerTransaction.objects.filter(kind="usage").count() == 1


def test_the_run_is_recorded_as_a_job_run():
    make_accounts()
    insert_usage([usage_row() for _ in range(2)])

    account_pending_usage(batch_size=1)

    run = JobRun.objects.get(job="account_pending_usage")
    assert (run.status, run.counts["accounted"], run.counts["batches"]) == ("succeeded", 2, 2)


def test_batches_and_max_batches():
    make_accounts()
    insert_usage([usage_row() for _ in range(5)])

    first = account_pending_usage(batch_size=2, max_batches=1)
    rest = account_pending_usage(batch_size=2)

    assert (first["accounted"], first["batches"]) == (2, 1)
    assert (rest["accounted"], rest["batches"]) == (3, 2)


def test_nothing_billable_is_skipped():
    (usage_id,) = insert_usage([usage_row(amount=Decimal(0), cost=Decimal(0))])

    counts = account_pending_usage()

    assert counts["skipped"] == 1
    assert status_of(usage_id) == "skipped"
    assert not LedgerTransaction.objects.exists()


def test_a_failed_posting_marks_the_record_failed_and_writes_its_failure_row():
    make_accounts(customers=())
    row = usage_row(userid="u-9", llmid="gpt-4o-2024", model_name="gpt-4o")
    insert_usage([row])

    counts = account_pending_usage()

    assert counts["failed"] == 1
    assert status_of(row["id"]) == "failed"
    failure = AccountingFailure.objects.get(usage_id=row["id"])
    assert (failure.error_code, failure.attempts, failure.status) == ("no_account", 1, "open")
    assert (failure.transno, failure.userid, failure.userorgid, failure.ownerid) == (
        row["transno"],
        "u-9",
        "acme",
        "openai",
    )
    assert (failure.llmid, failure.model_name, failure.use_date) == ("gpt-4o-2024", "gpt-4o", row["use_date"])
    assert (failure.amount, failure.cost) == (Decimal("0.006"), Decimal("0.0048"))
    assert "'acme' has no customer account" in failure.error_message


def test_one_failing_record_does_not_hold_back_the_others():
    make_accounts(customers=("acme",))
    good = insert_usage([usage_row(), usage_row()])
    (bad,) = insert_usage([usage_row(userorgid="initech")])

    account_pending_usage()

    assert [status_of(pk) for pk in good] == ["accounted", "accounted"]
    assert status_of(bad) == "failed"


def test_an_unexpected_error_fails_only_its_record_as_internal(monkeypatch):
    make_accounts()
    ids = insert_usage([usage_row() for _ in range(3)])
    broken = ids[1]
    real = usage_posting._AccountBook.lines_for

    def lines_for(self, usage):
        if usage.usage_id == broken:
            raise RuntimeError("disk on fire")
        return real(self, usage)

    monkeypatch.setattr(usage_posting._AccountBook, "lines_for", lines_for)

    counts = account_pending_usage()

    assert (counts["accounted"], counts["failed"]) == (2, 1)
    failure = AccountingFailure.objects.get(usage_id=broken)
    assert (failure.error_code, failure.error_message) == ("internal", "RuntimeError: disk on fire")
    assert LedgerTransaction.objects.filter(kind="usage").count() == 2
    assert ledger_check().ok


def test_a_record_without_a_price_fails_with_no_price_and_posts_once_the_price_exists():
    make_accounts()
    (usage_id,) = insert_usage([usage_row(amount=None, model_name="new-model")])

    account_pending_usage()
    failure = AccountingFailure.objects.get(usage_id=usage_id)
    assert failure.error_code == "no_price"

    ModelPrice.objects.create(
        model_name="new-model",
        kind="sale",
        effective_from=datetime(2026, 1, 1, tzinfo=UTC),
        input_price=Decimal("1"),
        output_price=Decimal("2"),
    )
    result = retry_failed_accounting(ids=[failure.pk])

    assert result.outcomes == {failure.pk: "accounted"}
    record = LLMUsage.objects.get(pk=usage_id)
    # 1200 input at 1/M and 300 output at 2/M
    assert (record.accounting_status, record.amount) == ("accounted", Decimal("0.00180"))
    assert record.price["sale"]["input_price"] == "1.00000"
    failure.refresh_from_db()
    assert (failure.status, failure.resolved_by) == ("resolved", "retry")


def test_the_scheduled_retry_waits_for_the_backoff():
    make_accounts(funds=Decimal(0))
    (usage_id,) = insert_usage([usage_row()])
    account_pending_usage()
    failure = AccountingFailure.objects.get(usage_id=usage_id)
    ledger_topup(org="acme", amount=Decimal(1))

    too_early = retry_failed_accounting(now=timezone.now() + timedelta(minutes=1))
    in_time = retry_failed_accounting(now=timezone.now() + timedelta(minutes=3))

    assert too_early.counts["retried"] == 0
    assert in_time.outcomes == {failure.pk: "accounted"}
    assert status_of(usage_id) == "accounted"
    assert JobRun.objects.filter(job="retry_failed_accounting").count() == 2


def test_a_retry_that_fails_again_counts_the_attempt_and_backs_off_further():
    make_accounts(funds=Decimal(0))
    (usage_id,) = insert_usage([usage_row()])
    account_pending_usage()
    failure = AccountingFailure.objects.get(usage_id=usage_id)

    result = retry_failed_accounting(force=True)

    assert result.outcomes == {failure.pk: "failed"}
    failure.refresh_from_db()
    assert (failure.attempts, failure.error_code, failure.status) == (2, "insufficient_balance", "open")
    assert failure.next_retry_at - failure.last_failed_at == timedelta(minutes=4)
    assert status_of(usage_id) == "failed"


def test_retrying_an_already_accounted_record_is_a_no_op():
    make_accounts(funds=Decimal(0))
    (usage_id,) = insert_usage([usage_row()])
    account_pending_usage()
    failure = AccountingFailure.objects.get(usage_id=usage_id)
    ledger_topup(org="acme", amount=Decimal(1))
    retry_failed_accounting(ids=[failure.pk])
    before = (
        balance("acme"),
        LedgerTransaction.objects.count(),
        LLMUsage.objects.get(pk=usage_id).accounted_at,
    )

    again = retry_failed_accounting(ids=[failure.pk], by="ops")

    assert again.outcomes == {failure.pk: "already_accounted"}
    after = (
        balance("acme"),
        LedgerTransaction.objects.count(),
        LLMUsage.objects.get(pk=usage_id).accounted_at,
    )
    assert after == before
    failure.refresh_from_db()
    assert failure.resolved_by == "retry"  # unchanged by the no-op


def test_a_retry_closes_a_failure_left_open_for_a_record_that_was_posted():
    make_accounts()
    (usage_id,) = insert_usage([usage_row()])
    account_pending_usage()
    row = LLMUsage.objects.get(pk=usage_id)
    failure = AccountingFailure.objects.create(
        usage_id=usage_id,
        transno=row.transno,
        use_date=row.use_date,
        error_code="internal",
        first_failed_at=timezone.now(),
        last_failed_at=timezone.now(),
    )

    result = retry_failed_accounting(ids=[failure.pk])

    assert result.outcomes == {failure.pk: "already_accounted"}
    assert LedgerTransaction.objects.filter(usage_id=usage_id).count() == 1
    failure.refresh_from_db()
    assert failure.status == "resolved"


def test_retry_of_a_record_that_is_gone_says_missing():
    failure = AccountingFailure.objects.create(
        usage_id=usage_row()["id"],
        transno="gone",
        use_date=datetime(2026, 11, 20).date(),
        error_code="internal",
        first_failed_at=timezone.now(),
        last_failed_at=timezone.now(),
    )

    assert retry_failed_accounting(ids=[failure.pk]).outcomes == {failure.pk: "missing"}


def test_ignored_failures_are_left_alone_by_the_schedule_but_not_by_an_operator():
    make_accounts(funds=Decimal(0))
    (usage_id,) = insert_usage([usage_row()])
    account_pending_usage()
    failure = AccountingFailure.objects.get(usage_id=usage_id)
    AccountingFailure.objects.filter(pk=failure.pk).update(status="ignored")
    ledger_topup(org="acme", amount=Decimal(1))

    scheduled = retry_failed_accounting(force=True)
    asked = retry_failed_accounting(ids=[failure.pk])

    assert scheduled.counts["retried"] == 0
    assert asked.outcomes == {failure.pk: "accounted"}


# --- the ingest hook ------------------------------------------------------------------------------


@pytest.fixture
def enqueued(monkeypatch):
    calls = []
    monkeypatch.setattr(tasks, "_last_request", float("-inf"))
    monkeypatch.setattr(tasks.account_pending_usage, "apply_async", lambda **kwargs: calls.append(kwargs))
    return calls


def test_ingest_asks_for_a_posting_run_after_commit_debounced(enqueued, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        for _ in range(3):
            usage_ingest(body=json.dumps(usage_payload()).encode())

    assert len(enqueued) == 1
    assert enqueued[0]["kwargs"] == {"only_if_pending": True}
    assert enqueued[0]["countdown"] == tasks.POSTING_DEBOUNCE_SECONDS


def test_ingest_asks_again_once_the_debounce_window_has_passed(
    enqueued, monkeypatch, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        usage_ingest(body=json.dumps(usage_payload()).encode())
    monkeypatch.setattr(tasks, "_last_request", tasks._last_request - tasks.POSTING_DEBOUNCE_SECONDS)
    with django_capture_on_commit_callbacks(execute=True):
        usage_ingest(body=json.dumps(usage_payload()).encode())

    assert len(enqueued) == 2


def test_nothing_to_post_asks_for_nothing(enqueued, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        usage_ingest(body=json.dumps(usage_payload(amount="0", cost="0")).encode())

    assert enqueued == []


def test_a_broker_that_is_down_never_fails_an_ingest(monkeypatch, django_capture_on_commit_callbacks):
    def refuse(**kwargs):
        raise ConnectionError("broker down")

    monkeypatch.setattr(tasks, "_last_request", float("-inf"))
    monkeypatch.setattr(tasks.account_pending_usage, "apply_async", refuse)

    with django_capture_on_commit_callbacks(execute=True):
        result = usage_ingest(body=json.dumps(usage_payload()).encode())

    assert result.items[0].status == "created"


# --- commands -------------------------------------------------------------------------------------


def test_account_pending_usage_command_prints_its_counts():
    make_accounts()
    insert_usage([usage_row() for _ in range(3)])
    out = StringIO()

    call_command("account_pending_usage", "--batch-size", "2", stdout=out)

    assert json.loads(out.getvalue())["accounted"] == 3


def test_retry_failed_accounting_command_by_id_and_all():
    make_accounts(funds=Decimal(0))
    insert_usage([usage_row(), usage_row()])
    account_pending_usage()
    first, second = AccountingFailure.objects.order_by("pk")
    ledger_topup(org="acme", amount=Decimal(1))
    out = StringIO()

    call_command("retry_failed_accounting", "--id", str(first.pk), stdout=out)
    call_command("retry_failed_accounting", "--all", stdout=out)

    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert (lines[0]["accounted"], lines[1]["accounted"]) == (1, 1)
    assert set(LLMUsage.objects.values_list("accounting_status", flat=True)) == {"accounted"}
    second.refresh_from_db()
    assert (second.status, second.resolved_by) == ("resolved", "manage.py")


@pytest.mark.parametrize(
    ("command", "args"),
    [
        ("account_pending_usage", ["--batch-size", "0"]),
        ("account_pending_usage", ["--max-batches", "0"]),
        ("retry_failed_accounting", ["--id", "1", "--all"]),
        ("retry_failed_accounting", ["--batch-size", "0"]),
    ],
)
def test_posting_commands_refuse_bad_arguments(command, args):
    with pytest.raises(CommandError):
        call_command(command, *args, stdout=StringIO())


def test_a_pending_record_that_was_posted_already_is_not_posted_again():
    """Someone set a posted record back to pending: the unique constraint stops the batch, the
    record-by-record path finds the existing transaction, and the others still post."""
    make_accounts()
    (posted,) = insert_usage([usage_row()])
    account_pending_usage()
    LLMUsage.objects.filter(pk=posted).update(accounting_status="pending", accounted_at=None)
    (fresh,) = insert_usage([usage_row()])

    counts = account_pending_usage()

    assert (counts["already_accounted"], counts["accounted"]) == (1, 1)
    assert LedgerTransaction.objects.filter(usage_id=posted).count() == 1
    assert balance("acme") == Decimal(1000) - 2 * Decimal("0.006")
    assert (status_of(posted), status_of(fresh)) == ("accounted", "accounted")


def test_a_transno_with_tabs_newlines_and_backslashes_reaches_the_ledger_unchanged():
    make_accounts()
    transno = "gw\t1\\2\n3\r4 ünï"
    (usage_id,) = insert_usage([usage_row(transno=transno)])

    account_pending_usage()

    assert LedgerTransaction.objects.get(usage_id=usage_id).reference == transno
