"""Re-pricing with an audit trail (issue 20): dry run, apply, idempotence, the ledger after it."""

from datetime import UTC, date, datetime
from decimal import Decimal

import pytest

from accounting.ledger import LedgerError, ledger_check
from accounting.models import AccountingFailure, LedgerLine, LedgerTransaction, Repricing, RepricingItem
from llmlog.models import LLMUsage, ModelPrice, UsageAll, UsageRollupStale
from llmlog.posting import account_pending_usage
from llmlog.queries import UsageQuery
from llmlog.repricing import RepricingInvalid, RepricingStale, repricing_apply, repricing_create
from llmlog.selectors.stats import usage_stats
from tests.factories import USE_TIME, balance, insert_usage, make_accounts, move_to_history, usage_row

pytestmark = pytest.mark.django_db

DAY = USE_TIME.date()
# usage_row: 1200 input + 300 output tokens, charged 0.006 (cost 0.0048). At the new prices below:
# amount 1200 * 10 / 1M + 300 * 20 / 1M = 0.018, cost 1200 * 5 / 1M + 300 * 10 / 1M = 0.009.
NEW_AMOUNT, NEW_COST = Decimal("0.01800"), Decimal("0.00900")
DELTA_AMOUNT, DELTA_COST = NEW_AMOUNT - Decimal("0.006"), NEW_COST - Decimal("0.0048")


def set_prices(*, model_name: str = "gpt-4o", sale: str = "10", cost: str = "5", factor: str = "2") -> None:
    """Sale and cost prices of the model from 2026-01-01 (so in effect at USE_TIME), output = factor x."""
    since = datetime(2026, 1, 1, tzinfo=UTC)
    for kind, unit in (("sale", sale), ("cost", cost)):
        ModelPrice.objects.update_or_create(
            model_name=model_name,
            kind=kind,
            effective_from=since,
            defaults={
                "ownerid": "openai",
                "input_price": Decimal(unit),
                "output_price": Decimal(unit) * Decimal(factor),
            },
        )


def accounted(*rows: dict) -> list:
    ids = insert_usage(list(rows))
    assert account_pending_usage()["accounted"] == len(rows)
    return ids


@pytest.fixture
def books():
    make_accounts(customers=("acme", "globex"), funds=Decimal(100))
    set_prices()


def balances() -> dict[str, Decimal]:
    return {
        "acme": balance("acme"),
        "globex": balance("globex"),
        "openai": balance("openai", "owner"),
        "platform": balance("platform", "platform"),
    }


def test_a_dry_run_keeps_a_report_and_changes_nothing(books):
    accounted(usage_row(), usage_row(), usage_row(userorgid="globex"))
    before = balances()

    repricing = repricing_create(start=DAY, end=DAY, created_by="ops")

    assert repricing.status == Repricing.Status.DRY_RUN
    assert (repricing.records, repricing.changed) == (3, 3)
    assert (repricing.delta_amount, repricing.delta_cost) == (3 * DELTA_AMOUNT, 3 * DELTA_COST)
    acme = next(row for row in repricing.summary if row["userorgid"] == "acme")
    assert acme == {
        "userorgid": "acme",
        "model_name": "gpt-4o",
        "records": 2,
        "changed": 2,
        "unpriced": 0,
        "old_amount": "0.01200",
        "new_amount": "0.03600",
        "old_cost": "0.00960",
        "new_cost": "0.01800",
        "delta_amount": "0.02400",
        "delta_cost": "0.00840",
    }
    assert repricing.items.count() == 3
    assert balances() == before
    assert not LedgerTransaction.objects.filter(kind="adjustment").exists()


def test_applying_a_dry_run_posts_adjustments_that_agree_with_it(books):
    ids = accounted(usage_row(), usage_row(), usage_row(userorgid="globex"))
    before = balances()
    dry = repricing_create(start=DAY, end=DAY)

    repricing, applied = repricing_apply(repricing_id=dry.pk, applied_by="ops")

    assert applied and repricing.status == Repricing.Status.APPLIED and repricing.applied_by == "ops"
    after = balances()
    assert after["acme"] - before["acme"] == -2 * DELTA_AMOUNT
    assert after["globex"] - before["globex"] == -DELTA_AMOUNT
    assert after["openai"] - before["openai"] == 3 * DELTA_COST
    assert after["platform"] - before["platform"] == 3 * (DELTA_AMOUNT - DELTA_COST)
    assert sum(after.values()) - sum(before.values()) == 0
    assert ledger_check().ok
    adjustments = LedgerTransaction.objects.filter(kind="adjustment")
    assert adjustments.count() == 2  # one per (customer, owner, currency)
    assert all(txn.reference.startswith(f"repricing:{dry.pk}:") for txn in adjustments)
    for txn in adjustments:
        assert sum(line.amount for line in LedgerLine.objects.filter(transaction=txn)) == 0
    # Records keep what they were charged, and link to their adjustment.
    for record in LLMUsage.objects.filter(pk__in=ids):
        assert (record.amount, record.cost) == (Decimal("0.006"), Decimal("0.0048"))
        item = RepricingItem.objects.get(usage_id=record.pk)
        assert item.adjustment.kind == "adjustment"
        assert item.adjustment.lines.get(account__org=record.userorgid).amount == -item.delta_amount * (
            2 if record.userorgid == "acme" else 1
        )


def test_a_second_apply_changes_nothing(books):
    accounted(usage_row())
    dry = repricing_create(start=DAY, end=DAY)
    repricing_apply(repricing_id=dry.pk)
    after_first = (balances(), LedgerTransaction.objects.count(), LedgerLine.objects.count())

    repricing, applied = repricing_apply(repricing_id=dry.pk)

    assert not applied and repricing.status == Repricing.Status.APPLIED
    assert (balances(), LedgerTransaction.objects.count(), LedgerLine.objects.count()) == after_first


def test_a_second_repricing_after_an_apply_finds_nothing_to_change(books):
    accounted(usage_row(), usage_row(userorgid="globex"))
    repricing_create(start=DAY, end=DAY, apply=True)

    again = repricing_create(start=DAY, end=DAY)

    assert (again.records, again.changed, again.delta_amount, again.delta_cost) == (2, 0, 0, 0)
    assert not again.items.exists()
    assert all(row["old_amount"] == row["new_amount"] == "0.01800" for row in again.summary)


def test_a_later_price_change_adjusts_from_the_adjusted_figures(books):
    accounted(usage_row())
    repricing_create(start=DAY, end=DAY, apply=True)
    set_prices(sale="20", cost="5")  # amount 0.036, cost unchanged
    before = balances()

    second = repricing_create(start=DAY, end=DAY, apply=True)

    item = second.items.get()
    assert (item.old_amount, item.new_amount) == (NEW_AMOUNT, Decimal("0.036"))
    assert (item.old_cost, item.new_cost) == (NEW_COST, NEW_COST)
    assert balances()["acme"] - before["acme"] == -(Decimal("0.036") - NEW_AMOUNT)
    assert balances()["openai"] == before["openai"]
    assert ledger_check().ok


def test_history_records_are_adjusted_too(books):
    (hot, old) = accounted(usage_row(), usage_row())
    move_to_history(old)
    before = balances()

    repricing = repricing_create(start=DAY, end=DAY, apply=True)

    assert repricing.changed == 2
    assert RepricingItem.objects.get(usage_id=old).adjustment is not None
    assert UsageAll.objects.get(pk=old).amount == Decimal("0.006")
    assert balances()["acme"] - before["acme"] == -2 * DELTA_AMOUNT


def test_scope_narrows_by_model_org_and_dates(books):
    set_prices(model_name="claude")
    accounted(
        usage_row(),
        usage_row(model_name="claude", llmid="claude"),
        usage_row(userorgid="globex"),
        usage_row(use_date=date(2026, 11, 21), use_time=datetime(2026, 11, 21, 9, tzinfo=UTC)),
    )

    repricing = repricing_create(start=DAY, end=DAY, model_name="gpt-4o", userorgid="acme")

    assert repricing.records == 1
    assert [(row["userorgid"], row["model_name"]) for row in repricing.summary] == [("acme", "gpt-4o")]


def test_pending_records_are_repriced_in_place_and_their_hour_marked_stale(books):
    (pending,) = insert_usage([usage_row()])
    UsageRollupStale.objects.all().delete()

    repricing = repricing_create(start=DAY, end=DAY, apply=True)

    item = repricing.items.get()
    assert item.treatment == "in_place" and item.adjustment is None
    record = LLMUsage.objects.get(pk=pending)
    assert (record.amount, record.cost) == (NEW_AMOUNT, NEW_COST)
    assert record.price["sale"]["input_price"] == "10.00000"
    assert not LedgerTransaction.objects.filter(kind="adjustment").exists()
    assert UsageRollupStale.objects.filter(hour=USE_TIME.replace(minute=0)).exists()
    # The posting then charges the new figures.
    before = balance("acme")
    account_pending_usage()
    assert balance("acme") == before - NEW_AMOUNT


def test_a_failed_record_repriced_in_place_shows_its_new_amount_among_the_failures(books):
    (failing,) = insert_usage([usage_row(userorgid="initech")])  # no account: the posting fails
    account_pending_usage()
    assert AccountingFailure.objects.get(usage_id=failing).amount == Decimal("0.006")

    repricing_create(start=DAY, end=DAY, apply=True)

    failure = AccountingFailure.objects.get(usage_id=failing)
    assert (failure.amount, failure.cost, failure.status) == (NEW_AMOUNT, NEW_COST, "open")


def test_skipped_records_unpriced_models_and_failed_calls_are_left_alone(books):
    accounted(usage_row(model_name="no-price-model", llmid="x"))
    insert_usage(
        [usage_row(status="failed", amount=Decimal(0), cost=Decimal(0), accounting_status="skipped")]
    )

    repricing = repricing_create(start=DAY, end=DAY, apply=True)

    assert (repricing.records, repricing.changed) == (1, 0)
    assert repricing.summary[0]["unpriced"] == 1
    assert not LedgerTransaction.objects.filter(kind="adjustment").exists()


def test_a_dry_run_whose_records_changed_is_refused(books):
    accounted(usage_row())
    first = repricing_create(start=DAY, end=DAY)
    repricing_create(start=DAY, end=DAY, apply=True)  # another re-pricing adjusts the same record
    before = balances()

    with pytest.raises(RepricingStale):
        repricing_apply(repricing_id=first.pk)

    assert Repricing.objects.get(pk=first.pk).status == Repricing.Status.DRY_RUN
    assert balances() == before


def test_an_uncharged_record_posted_since_the_dry_run_is_refused(books):
    insert_usage([usage_row()])
    dry = repricing_create(start=DAY, end=DAY)
    account_pending_usage()

    with pytest.raises(RepricingStale):
        repricing_apply(repricing_id=dry.pk)
    assert LLMUsage.objects.get().amount == Decimal("0.006")


def test_a_missing_account_refuses_the_apply_and_writes_nothing(books):
    accounted(usage_row())
    dry = repricing_create(start=DAY, end=DAY)
    RepricingItem.objects.update(ownerid="nobody")  # as if the book named an owner without an account

    with pytest.raises(LedgerError) as caught:
        repricing_apply(repricing_id=dry.pk)

    assert caught.value.error_code == "no_account" and "nobody" in caught.value.message
    assert Repricing.objects.get(pk=dry.pk).status == Repricing.Status.DRY_RUN
    assert not LedgerTransaction.objects.filter(kind="adjustment").exists()


def test_end_before_start_names_end():
    with pytest.raises(RepricingInvalid) as caught:
        repricing_create(start=DAY, end=date(2026, 11, 1))
    assert caught.value.field == "end"


def test_stats_show_charges_and_adjustments_apart_and_together(books):
    accounted(usage_row(), usage_row(userorgid="globex"))
    repricing_create(start=DAY, end=DAY, apply=True)

    stats = usage_stats(query=UsageQuery(org="acme"))

    assert stats["amount"] == Decimal("0.006")
    assert stats["adjustments"] == DELTA_AMOUNT
    assert stats["net_amount"] == NEW_AMOUNT
    everyone = usage_stats()
    assert everyone["adjustments"] == 2 * DELTA_AMOUNT
    assert everyone["net_amount"] == 2 * NEW_AMOUNT
