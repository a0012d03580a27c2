"""Budgets and holds wired to the usage path, end to end through the HTTP API: a gateway reserves with
POST /api/holds/, reports the call with POST /api/llmusage/ under the hold's transno, posting settles the
hold, and a budget's spent follows the rows through ingest (single, bulk, resends), edits and deletes."""

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from django.contrib import admin
from django.db import connection
from django.db.models import Sum

from accounting.budgets import budget_create, budget_status
from accounting.models import Budget, Hold
from llmlog.ingest.service import GROUP_COMMIT
from llmlog.models import LLMUsage, ModelPrice
from llmlog.posting import account_pending_usage
from llmlog.tasks import account_pending_usage as account_pending_usage_task
from tests.conftest import bearer
from tests.factories import make_accounts, usage_payload


def hold(api, key: dict, transno: str, amount: str):
    body = {"userorgid": "acme", "transno": transno, "amount": amount}
    return api.post("/api/holds/", body, format="json", **key)


def report(api, key: dict, body):
    return api.post("/api/llmusage/", body, format="json", **key)


def record(**overrides) -> dict:
    """A gateway's record of a call made now, stating its money (a platform key may)."""
    return usage_payload(use_time=datetime.now(UTC).isoformat(), **overrides)


def spent_and_held(budget_id: int) -> tuple[Decimal, Decimal]:
    status = budget_status(budget=Budget.objects.get(pk=budget_id))
    return status.spent, status.held


def rows_sum(**scope) -> Decimal:
    return LLMUsage.objects.filter(userorgid="acme", **scope).aggregate(s=Sum("amount"))["s"] or Decimal(0)


@pytest.fixture
def gateway(platform_key) -> dict:
    make_accounts()
    return bearer(platform_key)


@pytest.mark.django_db
def test_a_blocking_budget_follows_holds_records_posting_edits_and_deletes(api, gateway):
    created = api.post(
        "/api/budgets/",
        {"org": "acme", "limit": "1.00", "period": "total", "action": "block"},
        format="json",
        **gateway,
    )
    assert created.status_code == 201, created.content
    budget = created.json()["id"]
    key_a = budget_create(org="acme", token_name="key-a", period="total", limit=Decimal(10))  # alert only

    # A call reserved, then reported under its hold's transno: counted at once, held until posted.
    assert hold(api, gateway, "call-1", "0.30").status_code == 201
    first = report(api, gateway, record(transno="call-1", amount="0.25", token_name="key-a"))
    assert first.status_code == 201, first.content
    assert isinstance(first.json()["seq"], int)
    assert spent_and_held(budget) == (Decimal("0.25"), Decimal("0.30"))

    posted = account_pending_usage()

    assert posted["accounted"] == 1
    assert Hold.objects.get(transno="call-1").status == Hold.Status.SETTLED
    assert spent_and_held(budget) == (Decimal("0.25"), Decimal(0))

    # A record without a hold still counts; its resend is a duplicate and counts nothing more.
    second = record(transno="call-2", amount="0.40", token_name="key-a")
    assert report(api, gateway, second).status_code == 201
    assert report(api, gateway, second).status_code == 200
    assert spent_and_held(budget)[0] == Decimal("0.65")

    # A bulk request (COPY on PostgreSQL): every record counts once; one with nothing to bill is filed
    # skipped and settles its hold at ingest, since posting never sees it.
    assert hold(api, gateway, "call-free", "0.05").status_code == 201
    batch = [record(transno=f"bulk-{i}", amount="0.01", cost="0.008") for i in range(12)]
    batch.append(record(transno="call-free", amount="0", cost="0"))
    assert report(api, gateway, batch).status_code == 201
    assert report(api, gateway, batch[:3]).status_code == 200  # resent: duplicates only
    assert Hold.objects.get(transno="call-free").status == Hold.Status.SETTLED
    assert spent_and_held(budget) == (Decimal("0.77"), Decimal(0))

    # An edit moves the old count out and the new one in (amount, and the scope: key-a to key-b); a
    # delete takes the amount out.
    call_2 = LLMUsage.objects.get(transno="call-2")
    edited = api.patch(
        f"/api/llmusage/{call_2.pk}/", {"amount": "0.20", "token_name": "key-b"}, format="json", **gateway
    )
    assert edited.status_code == 200, edited.content
    deleted = api.delete(f"/api/llmusage/{LLMUsage.objects.get(transno='bulk-0').pk}/", **gateway)
    assert deleted.status_code == 204, deleted.content

    assert spent_and_held(budget)[0] == rows_sum() == Decimal("0.56")
    assert budget_status(budget=key_a).spent == rows_sum(token_name="key-a") == Decimal("0.25")

    # Spent + held reach the limit: 0.44 is left, and a hold past it is refused naming the budget.
    assert hold(api, gateway, "call-3", "0.40").status_code == 201
    refused = hold(api, gateway, "call-4", "0.05")
    assert refused.status_code == 402
    assert (refused.json()["code"], refused.json()["budget"], refused.json()["remaining"]) == (
        "budget_exceeded",
        budget,
        "0.04000",
    )
    assert hold(api, gateway, "call-5", "0.04").status_code == 201
    assert hold(api, gateway, "call-6", "0.00001").status_code == 402
    shown = api.get(f"/api/budgets/{budget}/", **gateway).json()
    assert (shown["spent"], shown["held"], shown["remaining"]) == ("0.56000", "0.44000", "0.00000")


@pytest.mark.django_db
def test_a_record_that_arrives_unpriced_counts_its_amount_when_posting_prices_it(api, make_key):
    make_accounts()
    budget = budget_create(org="acme", period="total", limit=Decimal(10), action="block")
    org_key = bearer(make_key(org="acme"))  # an org key's records are priced from the book
    body = usage_payload(use_time=datetime.now(UTC).isoformat())
    del body["amount"], body["cost"], body["ownerid"]

    assert report(api, org_key, body).status_code == 201
    assert LLMUsage.objects.get().amount is None
    assert budget_status(budget=budget).spent == 0

    ModelPrice.objects.create(
        model_name="gpt-4o",
        kind="sale",
        effective_from=datetime(2020, 1, 1, tzinfo=UTC),
        input_price=Decimal("5"),
        output_price=Decimal("15"),
    )
    account_pending_usage()

    usage = LLMUsage.objects.get()
    assert usage.accounting_status == "accounted" and usage.amount == Decimal("0.01050")
    assert budget_status(budget=budget).spent == usage.amount


@pytest.mark.django_db
def test_a_failed_posting_settles_the_hold_too(api, make_key, platform_key):
    make_accounts(funds=Decimal(0))  # nothing to pay with: the posting fails with insufficient_balance
    gateway = bearer(platform_key)
    budget = budget_create(org="acme", period="total", limit=Decimal(1), action="block")
    assert hold(api, gateway, "call-1", "0.00").status_code == 201  # a free hold: the account has nothing

    assert report(api, gateway, record(transno="call-1", amount="0.25")).status_code == 201
    posted = account_pending_usage()

    assert posted["failed"] == 1
    assert Hold.objects.get(transno="call-1").status == Hold.Status.SETTLED
    assert budget_status(budget=budget).spent == Decimal("0.25")  # spent counts a failed record too


def test_the_posting_task_on_a_real_worker_settles_holds_of_records_ingested_over_http(
    api, platform_key, celery_worker_process
):
    make_accounts()
    gateway = bearer(platform_key)
    budget = budget_create(org="acme", period="total", limit=Decimal(1), action="block")
    for n in range(3):
        assert hold(api, gateway, f"call-{n}", "0.30").status_code == 201
    # Single records outside a test transaction: PostgreSQL's group commit writes them.
    GROUP_COMMIT.reset_stats()
    answers = [report(api, gateway, record(transno=f"call-{n}", amount="0.20")) for n in range(3)]
    assert [answer.status_code for answer in answers] == [201] * 3
    assert all(isinstance(answer.json()["seq"], int) for answer in answers)  # the group's answer too
    assert GROUP_COMMIT.stats.records == (3 if connection.vendor == "postgresql" else 0)
    assert hold(api, gateway, "call-3", "0.20").status_code == 402  # 0.60 spent + 0.90 held

    posted = account_pending_usage_task.delay().get(timeout=60)

    assert posted["accounted"] == 3
    assert set(Hold.objects.values_list("status", flat=True)) == {Hold.Status.SETTLED}
    assert budget_status(budget=budget).spent == rows_sum() == Decimal("0.60")
    assert hold(api, gateway, "call-3", "0.40").status_code == 201


@pytest.mark.django_db
def test_the_budgets_page_keeps_no_request_state_on_the_shared_model_admin(admin_client):
    budget_create(org="acme", limit=Decimal(1), name="acme monthly")
    model_admin = admin.site._registry[Budget]
    before = dict(vars(model_admin))

    page = admin_client.get("/admin/accounting/budget/")

    assert page.status_code == 200 and "acme monthly" in page.content.decode()
    assert vars(model_admin) == before  # the page's statuses lived on its own budget objects
