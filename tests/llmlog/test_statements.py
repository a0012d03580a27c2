"""Monthly statements: a closed month balances against the ledger, stays the same after late postings
(they land in the next open month, once), and refuses a month that has not ended."""

import threading
from datetime import UTC, date, datetime
from decimal import Decimal
from io import StringIO

import pytest
from django.conf import settings
from django.core.management import CommandError, call_command
from django.db import connection, transaction
from django.db.models import Sum
from django.utils import timezone

from accounting.accounts import account_create
from accounting.ledger import ledger_adjust, ledger_topup
from accounting.models import Account, LedgerLine, Statement
from accounting.statements import Outcome, month_bounds, parse_month, statement_close
from accounting.usage_posting import ledger_post_usage
from llmlog.models import AccountingStatus, JobRun, LLMUsage
from llmlog.statements import close_ended_periods, close_period, statement_breakdown
from llmlog.tasks import close_ended_periods as close_ended_periods_task
from tests.factories import make_usage, move_to_history

pytestmark = pytest.mark.django_db

OCT, NOV, DEC = date(2026, 10, 1), date(2026, 11, 1), date(2026, 12, 1)
AFTER_NOV = datetime(2026, 12, 1, 0, 5, tzinfo=UTC)
AFTER_DEC = datetime(2027, 1, 1, 0, 5, tzinfo=UTC)


def at(month: int, day: int, hour: int = 12, minute: int = 0, second: int = 0, year: int = 2026) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


@pytest.fixture
def acme() -> Account:
    """acme's customer account, opened in January, with 100 topped up in October."""
    account = account_create(org="acme", kind="customer")
    account_create(org="openai", kind="owner")
    account_create(org="platform", kind="platform")
    Account.objects.filter(kind="customer").update(created_at=at(1, 1))
    ledger_topup(org="acme", amount=Decimal(100), reference="oct", now=at(10, 5))
    account.refresh_from_db()
    return account


def charge(when: datetime, *, model_name: str = "gpt-4o", amount: str = "1.25", use_time=None) -> LLMUsage:
    """A record used at `use_time` (default: when) and posted to the ledger at `when`."""
    record = make_usage(
        model_name=model_name,
        amount=Decimal(amount),
        cost=Decimal(amount) / 2,
        use_time=use_time or when,
        use_date=(use_time or when).date(),
    )
    ledger_post_usage(
        usage_id=record.pk,
        transno=record.transno,
        userorgid=record.userorgid,
        ownerid=record.ownerid,
        amount=record.amount,
        cost=record.cost,
        currency="USD",
        now=when,
    )
    LLMUsage.objects.filter(pk=record.pk).update(accounting_status=AccountingStatus.ACCOUNTED)
    return record


def ledger_at(account: Account, before: datetime) -> Decimal:
    total = LedgerLine.objects.filter(account=account, transaction__created_at__lt=before).aggregate(
        total=Sum("amount")
    )["total"]
    return Decimal(total or 0).quantize(Decimal("0.00001"))


def november(acme: Account) -> None:
    """A top-up, three records of two models on two days, an adjustment; and one December posting."""
    ledger_topup(org="acme", amount=Decimal(50), reference="nov", now=at(11, 3))
    charge(at(11, 10), model_name="gpt-4o", amount="1.25")
    charge(at(11, 10, 18), model_name="gpt-4o", amount="2.50")
    charge(at(11, 29), model_name="claude-3", amount="0.75")
    ledger_adjust(org="acme", amount=Decimal(-2), memo="goodwill reversed", now=at(11, 20))
    charge(at(12, 1, 0, 1), model_name="gpt-4o", amount="9.00")  # December's, posted before the close


def model_row(model_name: str, **figures) -> dict:
    return {"model_name": model_name, **figures}


def close(month: date, now: datetime, org: str = "acme"):
    (result,) = close_period(month=month, org=org, now=now)
    return result


def test_a_statement_balances_against_the_ledger(acme):
    november(acme)

    result = close(NOV, AFTER_NOV)

    assert result.outcome == Outcome.CLOSED
    statement = Statement.objects.get(account=acme, month=NOV)
    assert statement.opening_balance == Decimal(100)
    assert statement.charges == Decimal("4.50")
    assert statement.topups == Decimal(50)
    assert statement.adjustments == Decimal(-2)
    assert statement.closing_balance == Decimal("143.50")
    movements = -statement.charges + statement.topups + statement.adjustments
    assert statement.opening_balance + movements == statement.closing_balance
    assert statement.closing_balance == ledger_at(acme, at(12, 1, 0))
    assert statement.requests == 3
    data = statement.data
    assert data["by_model"] == [
        model_row("gpt-4o", requests=2, input_tokens=200, output_tokens=100, charges="3.75000"),
        model_row("claude-3", requests=1, input_tokens=100, output_tokens=50, charges="0.75000"),
    ]
    assert data["by_day"] == [
        {"date": "2026-11-10", "requests": 2, "charges": "3.75000"},
        {"date": "2026-11-29", "requests": 1, "charges": "0.75000"},
    ]
    assert (data["opening_balance"], data["closing_balance"]) == ("100.00000", "143.50000")
    assert data["period_start"] == "2026-11-01T00:00:00+00:00"
    assert data["period_end"] == "2026-12-01T00:00:00+00:00"


def test_late_postings_land_in_the_next_month_and_the_closed_one_stays_the_same(acme):
    november(acme)
    close(NOV, AFTER_NOV)
    closed = Statement.objects.get(account=acme, month=NOV)
    snapshot = (closed.data, closed.closing_balance, closed.closing_line_id)

    # A November record posted in December, and one stamped inside November that committed after the
    # close (it raced it): both are December's, once.
    charge(at(12, 3), model_name="claude-3", amount="0.40", use_time=at(11, 28))
    charge(at(11, 30, 23, 59, 59), model_name="gpt-4o", amount="0.60")
    ledger_topup(org="acme", amount=Decimal(10), reference="dec", now=at(12, 5))

    again = close(NOV, AFTER_DEC)
    december = close(DEC, AFTER_DEC)

    assert again.outcome == Outcome.ALREADY_CLOSED
    assert "closed already" in again.message
    closed.refresh_from_db()
    assert (closed.data, closed.closing_balance, closed.closing_line_id) == snapshot
    assert december.outcome == Outcome.CLOSED
    statement = Statement.objects.get(account=acme, month=DEC)
    assert statement.opening_balance == closed.closing_balance
    assert statement.charges == Decimal("10.00")  # 9.00 (Dec 1) + 0.40 (late) + 0.60 (raced)
    assert statement.topups == Decimal(10)
    assert statement.requests == 3
    assert statement.closing_balance == statement.opening_balance - Decimal("10.00") + Decimal(10)
    acme.refresh_from_db()
    assert statement.closing_balance == acme.balance  # every line so far is counted once
    assert {row["date"] for row in statement.data["by_day"]} == {"2026-11-28", "2026-11-30", "2026-12-01"}


def test_a_record_accounted_weeks_late_is_found_by_its_id(acme):
    close(NOV, AFTER_NOV)
    record = charge(at(12, 10), model_name="o1", amount="3.00", use_time=at(9, 20))
    move_to_history(record)

    close(DEC, AFTER_DEC)

    data = Statement.objects.get(month=DEC).data
    assert data["by_model"] == [
        model_row("o1", requests=1, input_tokens=100, output_tokens=50, charges="3.00000")
    ]
    assert data["by_day"] == [{"date": "2026-09-20", "requests": 1, "charges": "3.00000"}]


def test_history_records_are_in_the_breakdowns(acme):
    record = charge(at(11, 10), model_name="gpt-4o", amount="1.25")
    move_to_history(record)

    close(NOV, AFTER_NOV)

    assert Statement.objects.get(month=NOV).data["by_model"][0]["model_name"] == "gpt-4o"


def test_a_month_that_has_not_ended_is_refused(acme):
    result = close(DEC, at(12, 15))

    assert result.outcome == Outcome.REFUSED
    assert "2026-12 has not ended in UTC" in result.message
    assert not Statement.objects.exists()


def test_a_month_ends_in_the_orgs_time_zone(acme):
    Account.objects.filter(pk=acme.pk).update(time_zone="America/Los_Angeles")
    charge(at(12, 1, 5), amount="1.00")  # 2026-11-30 21:00 in Los Angeles: November's

    early = close(NOV, at(12, 1, 7))
    result = close(NOV, at(12, 1, 9))

    assert early.outcome == Outcome.REFUSED
    assert result.outcome == Outcome.CLOSED
    statement = Statement.objects.get(month=NOV)
    assert statement.charges == Decimal("1.00")
    assert statement.data["period_start"] == "2026-11-01T00:00:00-07:00"
    assert statement.data["time_zone"] == "America/Los_Angeles"
    assert month_bounds(month=NOV, time_zone="America/Los_Angeles")[1] == at(12, 1, 8)


def test_a_month_that_does_not_balance_is_refused(acme):
    november(acme)
    Account.objects.filter(pk=acme.pk).update(balance=Decimal("999"))

    result = close(NOV, AFTER_NOV)

    assert result.outcome == Outcome.REFUSED
    assert "is not the ledger's balance at the month's end" in result.message
    assert not Statement.objects.exists()


def test_a_changed_closed_period_refuses_the_next_close(acme):
    november(acme)
    close(NOV, AFTER_NOV)
    Statement.objects.filter(month=NOV).update(closing_balance=Decimal("1"))

    result = close(DEC, AFTER_DEC)

    assert result.outcome == Outcome.REFUSED
    assert "a closed period's lines or the balance changed" in result.message


def test_months_a_missed_run_left_open_close_in_order(acme):
    close(OCT, AFTER_NOV)
    november(acme)

    results = close_period(month=DEC, org="acme", now=AFTER_DEC)

    closed = [("2026-11", Outcome.CLOSED), ("2026-12", Outcome.CLOSED)]
    assert [(r.month, r.outcome) for r in results] == closed
    oct_, nov, dec = Statement.objects.filter(account=acme).order_by("month")
    assert oct_.closing_balance == nov.opening_balance and nov.closing_balance == dec.opening_balance
    assert close(OCT, AFTER_DEC).outcome == Outcome.ALREADY_CLOSED


def test_an_earlier_month_than_a_closed_one_is_refused(acme):
    close(NOV, AFTER_NOV)

    result = close(OCT, AFTER_NOV)

    assert result.outcome == Outcome.REFUSED
    assert "2026-11 is closed" in result.message


def test_an_account_opened_after_the_month_has_no_statement(acme):
    Account.objects.filter(pk=acme.pk).update(created_at=at(12, 2))

    assert close(NOV, AFTER_NOV).outcome == Outcome.SKIPPED


def test_the_close_is_one_grouped_query_whatever_the_records(acme, django_assert_max_num_queries):
    for day in range(1, 21):
        charge(at(11, day), model_name=f"model-{day % 3}", amount="0.10")

    with django_assert_max_num_queries(12):
        close(NOV, AFTER_NOV)

    assert Statement.objects.get(month=NOV).requests == 20


def test_the_beat_job_closes_each_accounts_last_ended_month(acme):
    account_create(org="globex", kind="customer")
    Account.objects.filter(org="globex").update(created_at=at(1, 1), time_zone="Pacific/Auckland")

    results = close_ended_periods(now=AFTER_NOV)

    assert {(r.org, r.month, r.outcome) for r in results} == {
        ("acme", "2026-11", Outcome.CLOSED),
        ("globex", "2026-11", Outcome.CLOSED),  # Auckland: already December 1st, 13:05
    }
    assert {r.outcome for r in close_ended_periods(now=AFTER_NOV)} == {Outcome.ALREADY_CLOSED}
    runs = JobRun.objects.filter(job="close_ended_periods").order_by("started_at")
    assert [run.counts for run in runs] == [{"closed": 2}, {"already_closed": 2}]


def test_the_job_run_names_a_refused_month(acme):
    Account.objects.filter(pk=acme.pk).update(balance=Decimal("999"))

    close_ended_periods(now=AFTER_NOV)

    run = JobRun.objects.get(job="close_ended_periods")
    assert run.status == "succeeded"
    assert run.counts["refused"] == 1
    assert run.counts["refusals"][0].startswith("acme 2026-11: The account's balance 999")


def test_the_monthly_task_runs_on_a_real_worker(celery_worker_process):
    account_create(org="acme", kind="customer")
    Account.objects.filter(org="acme").update(created_at=at(1, 1))

    counts = close_ended_periods_task.delay().get(timeout=60)

    assert counts == {"closed": 1}
    month = Statement.objects.get().month
    assert month < timezone.localdate().replace(day=1)  # the last month that has ended


def test_close_period_command_reports_each_org(acme):
    out = StringIO()
    call_command("close_period", "--month", "2026-11", stdout=out, stderr=StringIO())
    call_command("close_period", "--month", "2026-11", "--org", "acme", stdout=out, stderr=StringIO())

    assert "acme 2026-11: closed" in out.getvalue()
    assert "acme 2026-11: already_closed. The month is closed already." in out.getvalue()


def test_close_period_command_refuses_an_open_month_and_a_bad_one(acme):
    with pytest.raises(CommandError, match="1 statement"):
        call_command("close_period", "--month", "2999-01", stdout=StringIO(), stderr=StringIO())
    with pytest.raises(CommandError, match="month: expected a month as YYYY-MM"):
        call_command("close_period", "--month", "2026-13", stdout=StringIO(), stderr=StringIO())


@pytest.mark.parametrize("text", ["2026-13", "2026-1", "26-11", "", "2026-00", "2026-11-01"])
def test_parse_month_names_the_field(text):
    with pytest.raises(ValueError, match="^month: "):
        parse_month(text)


# --- the close against concurrent postings (PostgreSQL: row locks across connections) ---------------


def in_thread(target, *args) -> tuple[threading.Thread, threading.Event, list]:
    """Run target(*args) on its own connection; the event is set when it has returned."""
    done, errors = threading.Event(), []

    def run() -> None:
        try:
            target(*args)
        except Exception as exc:  # noqa: BLE001 - handed to the test
            errors.append(exc)
        finally:
            connection.close()
            done.set()

    thread = threading.Thread(target=run)
    thread.start()
    return thread, done, errors


@pytest.fixture
def postgresql_only(transactional_db) -> None:
    if connection.vendor != "postgresql":
        pytest.skip("row locks between connections: PostgreSQL (SQLite serializes every writer)")


def test_a_posting_that_commits_while_the_close_waits_is_the_closed_months(postgresql_only, acme):
    committing, release = threading.Event(), threading.Event()

    def post_slowly() -> None:
        with transaction.atomic():
            charge(at(11, 30, 23, 59, 59), amount="0.60")  # holds acme's lock until commit
            committing.set()
            release.wait(10)

    poster, posted, poster_errors = in_thread(post_slowly)
    assert committing.wait(10)
    closer, closed, closer_errors = in_thread(lambda: close(NOV, AFTER_NOV))
    waited = not closed.wait(0.5)  # the close waits for the lock
    release.set()
    poster.join(10)
    closer.join(10)

    assert waited and not poster_errors and not closer_errors
    assert Statement.objects.get(month=NOV).charges == Decimal("0.60")


def test_a_posting_stamped_in_the_month_that_commits_after_the_close_is_the_next_months(
    postgresql_only, acme
):
    reading, release = threading.Event(), threading.Event()

    def slow_breakdown(period):
        reading.set()  # the close holds acme's lock and has read its last line id
        release.wait(10)
        return statement_breakdown(period)

    closer, closed, closer_errors = in_thread(
        lambda: statement_close(account=acme, month=NOV, breakdown=slow_breakdown, now=AFTER_NOV)
    )
    assert reading.wait(10)
    poster, posted, poster_errors = in_thread(lambda: charge(at(11, 30, 23, 59, 59), amount="0.60"))
    waited = not posted.wait(0.5)  # the posting waits for the lock the close holds
    release.set()
    closer.join(10)
    poster.join(10)

    assert waited and not closer_errors and not poster_errors
    assert Statement.objects.get(month=NOV).charges == Decimal(0)
    close(DEC, AFTER_DEC)
    assert Statement.objects.get(month=DEC).charges == Decimal("0.60")


def test_beat_closes_months_hourly_on_the_first_two_days():
    entry = settings.CELERY_BEAT_SCHEDULE["close_ended_periods"]

    assert entry["task"] == close_ended_periods_task.name
    assert entry["schedule"].day_of_month == {1, 2}
    assert len(entry["schedule"].hour) == 24 and entry["schedule"].minute == {15}
    assert close_ended_periods_task.acks_late and close_ended_periods_task.time_limit
