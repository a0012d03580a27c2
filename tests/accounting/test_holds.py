"""Holds: admission against the account and every blocking budget in scope, settlement, expiry."""

import threading
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.db import connection

from accounting.budgets import UsageChange, budget_create, budget_status, budget_usage_apply
from accounting.holds import (
    HoldConflict,
    HoldRefused,
    HoldRequest,
    hold_grant,
    hold_release,
    holds_expire,
    holds_settle,
)
from accounting.models import Hold
from tests.factories import make_accounts

NOW = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)
TENTH = Decimal("0.10")


def request(transno: str, amount: Decimal = TENTH, **scope) -> HoldRequest:
    return HoldRequest(org="acme", transno=transno, amount=amount, **scope)


def grant_concurrently(count: int, amount: Decimal, now: datetime) -> tuple[list[Hold], list[HoldRefused]]:
    """`count` threads, each with its own database connection, ask for a hold at the same moment."""
    granted, refused, errors = [], [], []
    barrier = threading.Barrier(count)

    def ask(n: int) -> None:
        try:
            barrier.wait()
            hold, _ = hold_grant(request=request(f"call-{n}", amount), now=now)
            granted.append(hold)
        except HoldRefused as exc:
            refused.append(exc)
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=ask, args=(n,)) for n in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    return granted, refused


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_forty_concurrent_holds_of_a_tenth_against_a_blocking_budget_of_one_grant_exactly_ten():
    make_accounts(funds=Decimal(1000))
    budget = budget_create(org="acme", limit=Decimal("1.00"), period="month", action="block", now=NOW)

    granted, refused = grant_concurrently(40, TENTH, NOW)

    assert (len(granted), len(refused)) == (10, 30)
    assert {exc.code for exc in refused} == {"budget_exceeded"}
    assert {exc.budget for exc in refused} == {budget.pk}
    status = budget_status(budget=budget, now=NOW)
    assert (status.spent, status.held, status.remaining) == (Decimal(0), Decimal("1.00"), Decimal(0))

    # Their records arrive (ingest counts them) and are posted (their holds settle).
    budget_usage_apply(changes=[change(TENTH) for _ in granted])
    holds_settle(keys=[("acme", hold.transno) for hold in granted], now=NOW)

    status = budget_status(budget=budget, now=NOW)
    assert (status.spent, status.held, status.remaining) == (Decimal("1.00"), Decimal(0), Decimal(0))
    with pytest.raises(HoldRefused):
        hold_grant(request=request("one-more", Decimal("0.00001")), now=NOW)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_forty_concurrent_holds_against_an_account_of_one_grant_exactly_ten():
    make_accounts(funds=Decimal("0.50"), credit_limit=Decimal("0.50"))

    granted, refused = grant_concurrently(40, TENTH, NOW)

    assert (len(granted), len(refused)) == (10, 30)
    assert {exc.code for exc in refused} == {"insufficient_balance"}
    assert refused[0].remaining == Decimal(0)


def change(amount: Decimal, at: datetime = NOW, **scope) -> UsageChange:
    values = {"userid": "u-1", "token_name": "", "model_name": "gpt-4o", "feature": ""} | scope
    return UsageChange(userorgid="acme", use_time=at, amount=amount, **values)


@pytest.mark.django_db
def test_the_account_rule_counts_active_holds_against_balance_and_credit():
    make_accounts(funds=Decimal("0.25"), credit_limit=Decimal("0.05"))

    hold_grant(request=request("a"), now=NOW)
    hold_grant(request=request("b"), now=NOW)
    hold_grant(request=request("c", Decimal("0.10")), now=NOW)
    with pytest.raises(HoldRefused) as refused:
        hold_grant(request=request("d", Decimal("0.00001")), now=NOW)

    assert refused.value.code == "insufficient_balance"
    assert "0.25" in refused.value.detail and "0.05" in refused.value.detail


@pytest.mark.django_db
def test_an_expired_hold_frees_its_room_at_its_expiry():
    make_accounts()
    budget_create(org="acme", limit=Decimal("0.10"), action="block", now=NOW)
    hold_grant(request=HoldRequest(org="acme", transno="slow", amount=TENTH, ttl_seconds=60), now=NOW)

    with pytest.raises(HoldRefused):
        hold_grant(request=request("too-soon"), now=NOW + timedelta(seconds=59))
    later, _ = hold_grant(request=request("after-expiry"), now=NOW + timedelta(seconds=60))

    assert later.status == Hold.Status.ACTIVE
    assert holds_expire(now=NOW + timedelta(seconds=61)) == 1
    assert Hold.objects.get(transno="slow").status == Hold.Status.EXPIRED


@pytest.mark.django_db
def test_a_released_hold_frees_its_room():
    make_accounts()
    budget_create(org="acme", limit=Decimal("0.10"), action="block", now=NOW)
    hold, _ = hold_grant(request=request("cancelled"), now=NOW)

    released = hold_release(hold=hold, now=NOW)

    assert released.status == Hold.Status.RELEASED
    assert hold_grant(request=request("next"), now=NOW)[1] is True


@pytest.mark.django_db
def test_a_record_without_a_hold_still_counts():
    make_accounts()
    budget = budget_create(org="acme", limit=Decimal("1.00"), action="block", now=NOW)
    budget_usage_apply(changes=[change(Decimal("0.95"))])

    with pytest.raises(HoldRefused) as refused:
        hold_grant(request=request("over"), now=NOW)

    assert refused.value.remaining == Decimal("0.05")
    assert budget_status(budget=budget, now=NOW).spent == Decimal("0.95")


@pytest.mark.django_db
def test_only_blocking_budgets_in_the_calls_scope_refuse_it():
    make_accounts()
    budget_create(org="acme", limit=Decimal("0.05"), action="alert", now=NOW)  # alert only
    budget_create(org="acme", token_name="key-b", limit=Decimal("0.05"), action="block", now=NOW)
    budget_create(org="globex", limit=Decimal("0.05"), action="block", now=NOW)

    granted, _ = hold_grant(request=request("on-key-a", token_name="key-a"), now=NOW)
    with pytest.raises(HoldRefused) as refused:
        hold_grant(request=request("on-key-b", token_name="key-b"), now=NOW)

    assert granted.amount == TENTH
    assert refused.value.code == "budget_exceeded"


@pytest.mark.django_db
def test_a_budget_counts_the_active_holds_of_its_own_scope_only():
    """Holds of several scopes at once: a key's budget counts its key's holds (summed), the account
    counts every hold."""
    make_accounts(funds=Decimal("1.00"))
    budget_create(org="acme", token_name="key-a", limit=Decimal("0.35"), action="block", now=NOW)
    for n in range(3):
        hold_grant(request=request(f"a-{n}", token_name="key-a", model_name=f"m-{n}"), now=NOW)
    for n in range(5):
        hold_grant(request=request(f"b-{n}", token_name="key-b"), now=NOW)

    with pytest.raises(HoldRefused) as budget_full:
        hold_grant(request=request("a-over", Decimal("0.06"), token_name="key-a"), now=NOW)
    last_of_key_a, _ = hold_grant(request=request("a-last", Decimal("0.05"), token_name="key-a"), now=NOW)
    with pytest.raises(HoldRefused) as account_full:  # 0.85 held of 1.00: 0.15 left
        hold_grant(request=request("b-over", Decimal("0.16"), token_name="key-b"), now=NOW)

    assert (budget_full.value.code, budget_full.value.remaining) == ("budget_exceeded", Decimal("0.05"))
    assert last_of_key_a.status == Hold.Status.ACTIVE
    assert (account_full.value.code, account_full.value.remaining) == (
        "insufficient_balance",
        Decimal("0.15"),
    )


@pytest.mark.django_db
def test_the_same_transno_again_returns_its_hold_and_another_amount_conflicts():
    make_accounts()
    first, created = hold_grant(request=request("retry-me"), now=NOW)

    again, created_again = hold_grant(request=request("retry-me"), now=NOW)
    with pytest.raises(HoldConflict):
        hold_grant(request=request("retry-me", Decimal("0.20")), now=NOW)

    assert (created, created_again, again.pk) == (True, False, first.pk)


@pytest.mark.django_db
def test_settling_ends_only_the_holds_of_the_records_given_in_their_own_org():
    make_accounts(customers=("acme", "globex"))
    hold_grant(request=request("t-1"), now=NOW)
    hold_grant(request=request("t-2"), now=NOW)
    hold_grant(request=HoldRequest(org="globex", transno="t-1", amount=TENTH), now=NOW)

    assert holds_settle(keys=[("acme", "t-1")], now=NOW) == 1

    assert dict(Hold.objects.values_list("org", "status").filter(transno="t-1")) == {
        "acme": "settled",
        "globex": "active",
    }
    assert Hold.objects.get(org="acme", transno="t-2").status == "active"


@pytest.mark.django_db
def test_asking_again_for_a_granted_hold_returns_it_even_when_the_budget_is_full():
    make_accounts()
    budget_create(org="acme", limit=TENTH, action="block", now=NOW)
    first, created = hold_grant(request=request("call-1"), now=NOW)

    again, created_again = hold_grant(request=request("call-1"), now=NOW)

    assert (created, created_again, again.pk) == (True, False, first.pk)
    with pytest.raises(HoldConflict):
        hold_grant(request=request("call-1", Decimal("0.05")), now=NOW)


@pytest.mark.django_db
def test_admission_reads_the_current_periods_counter_of_each_period_kind():
    """Counters of past periods sit beside the current one; only the current one counts."""
    make_accounts()
    limits = {"day": "2.00", "week": "2.00", "month": "2.00", "total": "3.00"}
    budgets = {
        period: budget_create(org="acme", limit=Decimal(limit), period=period, action="block", now=NOW)
        for period, limit in limits.items()
    }
    for days_ago in (40, 8, 1):  # NOW is Friday 20 November: October, last week, this week
        budget_usage_apply(changes=[change(Decimal("0.95"), at=NOW - timedelta(days=days_ago))])
    budget_usage_apply(changes=[change(Decimal("0.02"))])
    # Spent: day 0.02, week 0.97, month 1.92, total 2.87: the month has the least room (0.08).

    with pytest.raises(HoldRefused) as refused:
        hold_grant(request=request("too-big", Decimal("0.09")), now=NOW)
    assert (refused.value.budget, refused.value.remaining) == (budgets["month"].pk, Decimal("0.08"))
    assert hold_grant(request=request("fits", Decimal("0.08")), now=NOW)[1] is True

    budgets["month"].delete()  # now the total has the least room: 3.00 - 2.87 - 0.08 held
    assert hold_grant(request=request("fits-the-total", Decimal("0.05")), now=NOW)[1] is True
    with pytest.raises(HoldRefused) as refused:
        hold_grant(request=request("one-more", Decimal("0.00001")), now=NOW)
    assert refused.value.budget == budgets["total"].pk
