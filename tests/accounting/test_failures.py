from datetime import date, datetime, timedelta

import pytest
from django.utils import timezone
from uuid_utils.compat import uuid7

from accounting.failures import (
    FailedPosting,
    FailureStateError,
    failure_ignore,
    failure_resolve,
    failures_record,
    failures_resolve_posted,
    get_failed_accounting_records,
    retry_delay,
)
from accounting.models import AccountingFailure
from tests.factories import make_failure

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 11, 20, 12, 0, tzinfo=timezone.get_fixed_timezone(0))


def record(**overrides) -> AccountingFailure:
    """The one failure of these tests (transno req-1, at T0) unless overridden."""
    return make_failure(**{"transno": "req-1", "now": T0, **overrides})


def test_a_first_failure_creates_its_row_with_one_attempt():
    failure = record()

    assert (failure.attempts, failure.status, failure.error_code) == (1, "open", "no_account")
    assert failure.first_failed_at == failure.last_failed_at == T0
    assert failure.next_retry_at == T0 + timedelta(minutes=2)


def test_failing_again_counts_the_attempt_keeps_the_first_time_and_reopens():
    failure = record()
    failure_ignore(failure=failure, by="ops")
    later = T0 + timedelta(minutes=5)

    again = record(
        usage_id=failure.usage_id, error_code="insufficient_balance", error_message="broke", now=later
    )

    assert again.pk == failure.pk
    assert (again.attempts, again.error_code, again.error_message) == (2, "insufficient_balance", "broke")
    assert (again.first_failed_at, again.last_failed_at) == (T0, later)
    assert (again.status, again.resolved_at, again.resolved_by) == ("open", None, "")
    assert again.next_retry_at == later + timedelta(minutes=4)


def test_many_failures_are_recorded_at_once():
    existing = record()
    failures = [
        FailedPosting(
            usage_id=existing.usage_id,
            transno="req-1",
            use_date=date(2026, 11, 20),
            error_code="internal",
            error_message="x" * 5000,
        ),
        FailedPosting(
            usage_id=uuid7(),
            transno="req-2",
            use_date=date(2026, 11, 21),
            error_code="no_price",
            error_message="no amount",
        ),
    ]

    failures_record(failures=failures, now=T0)

    assert AccountingFailure.objects.count() == 2
    existing.refresh_from_db()
    assert existing.attempts == 2
    assert len(existing.error_message) == 2000
    assert AccountingFailure.objects.get(transno="req-2").attempts == 1


def test_the_retry_delay_doubles_up_to_six_hours():
    assert [retry_delay(n) for n in (1, 2, 3, 8)] == [timedelta(minutes=m) for m in (2, 4, 8, 256)]
    assert retry_delay(9) == retry_delay(50) == timedelta(hours=6)


def test_resolve_records_who_and_when_and_is_idempotent():
    failure = record()

    resolved = failure_resolve(failure=failure, by="ada", now=T0)
    again = failure_resolve(failure=resolved, by="bob")

    assert (again.status, again.resolved_by, again.resolved_at) == ("resolved", "ada", T0)


def test_ignoring_a_resolved_failure_is_refused():
    failure = failure_resolve(failure=record(), by="ada")

    with pytest.raises(FailureStateError):
        failure_ignore(failure=failure, by="bob")


def test_a_posted_record_resolves_its_failure():
    failure = record()

    assert failures_resolve_posted(usage_ids=[failure.usage_id], by="retry") == 1

    failure.refresh_from_db()
    assert (failure.status, failure.resolved_by) == ("resolved", "retry")


@pytest.fixture
def failures():
    return {
        "a": record(
            transno="a",
            use_date=date(2026, 11, 1),
            userorgid="acme",
            userid="u-1",
            llmid="gpt-4o",
            model_name="gpt-4o",
            error_code="no_account",
        ),
        "b": record(
            transno="b",
            use_date=date(2026, 11, 10),
            userorgid="acme",
            userid="u-2",
            llmid="claude",
            model_name="claude-sonnet-4",
            error_code="insufficient_balance",
        ),
        "c": record(
            transno="c",
            use_date=date(2026, 11, 20),
            userorgid="globex",
            userid="u-1",
            llmid="gpt-4o",
            model_name="gpt-4o",
            error_code="no_price",
        ),
    }


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ({}, {"a", "b", "c"}),
        ({"start_date": date(2026, 11, 10)}, {"b", "c"}),
        ({"end_date": date(2026, 11, 10)}, {"a", "b"}),
        ({"start_date": date(2026, 11, 10), "end_date": date(2026, 11, 10)}, {"b"}),
        ({"userorgid": "acme"}, {"a", "b"}),
        ({"userid": "u-1"}, {"a", "c"}),
        ({"llmid": "claude"}, {"b"}),
        ({"model_name": "gpt-4o"}, {"a", "c"}),
        ({"error_code": "no_price"}, {"c"}),
        ({"status": "open"}, {"a", "b", "c"}),
        ({"status": "ignored"}, set()),
        ({"transno": "b"}, {"b"}),
        ({"userorgid": "acme", "userid": "u-1"}, {"a"}),
    ],
)
def test_get_failed_accounting_records_filters(failures, filters, expected):
    found = get_failed_accounting_records(**filters)

    assert {failure.transno for failure in found} == expected


def test_get_failed_accounting_records_lists_the_newest_failure_first(failures):
    record(usage_id=failures["a"].usage_id, transno="a", now=T0 + timedelta(hours=1))

    assert [f.transno for f in get_failed_accounting_records()][0] == "a"
