"""Budgets: periods, counters equal to the rows, the API, and alerts delivered once per threshold."""

import hashlib
import hmac
import json
import threading
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.core.management import call_command
from django.db import connection, transaction

from accounting.alerts import send_budget_alerts
from accounting.budgets import (
    UsageChange,
    budget_create,
    budget_reconcile,
    budget_status,
    budget_usage_apply,
    period_bounds,
)
from accounting.models import Budget, BudgetAlert, Hold
from llmlog.budget_spent import budgets_count_ingested, spent_in_period
from llmlog.ingest.storage import write_usage_rows
from llmlog.models import AccountingStatus, LLMUsage, ModelPrice
from tests.conftest import bearer
from tests.factories import USE_TIME, insert_usage, make_accounts, usage_row

pytestmark = pytest.mark.django_db


# --- periods --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("period", "zone", "start", "end"),
    [
        ("day", "UTC", datetime(2026, 11, 20, tzinfo=UTC), datetime(2026, 11, 21, tzinfo=UTC)),
        # 01:30 UTC on the 20th is still the 19th in New York (UTC-5 in November)
        (
            "day",
            "America/New_York",
            datetime(2026, 11, 19, 5, tzinfo=UTC),
            datetime(2026, 11, 20, 5, tzinfo=UTC),
        ),
        ("week", "UTC", datetime(2026, 11, 16, tzinfo=UTC), datetime(2026, 11, 23, tzinfo=UTC)),
        (
            "month",
            "Asia/Kolkata",
            datetime(2026, 10, 31, 18, 30, tzinfo=UTC),
            datetime(2026, 11, 30, 18, 30, tzinfo=UTC),
        ),
        ("total", "UTC", datetime(1970, 1, 1, tzinfo=UTC), None),
    ],
)
def test_a_period_starts_at_local_midnight_of_its_time_zone(period, zone, start, end):
    assert period_bounds(period=period, time_zone=zone, at=datetime(2026, 11, 20, 1, 30, tzinfo=UTC)) == (
        start,
        end,
    )


# --- the counter equals the rows ------------------------------------------------------------------


def test_a_new_budget_starts_from_the_rows_of_its_period_and_scope_whatever_their_accounting_status():
    insert_usage(
        [
            usage_row(amount=Decimal("0.10000"), accounting_status=AccountingStatus.PENDING),
            usage_row(amount=Decimal("0.20000"), accounting_status=AccountingStatus.FAILED),
            usage_row(amount=Decimal("0.40000"), accounting_status=AccountingStatus.ACCOUNTED),
            usage_row(amount=Decimal("0.80000"), token_name="other-key"),
            usage_row(amount=Decimal("1.60000"), use_time=USE_TIME - timedelta(days=40)),  # last period
            usage_row(amount=Decimal("3.20000"), userorgid="globex"),
        ]
    )
    key_budget = budget_create(org="acme", token_name="", limit=Decimal(10), now=USE_TIME)
    other_key = budget_create(org="acme", token_name="other-key", limit=Decimal(10), now=USE_TIME)

    assert budget_status(budget=key_budget, now=USE_TIME).spent == Decimal("1.50000")
    assert budget_status(budget=other_key, now=USE_TIME).spent == Decimal("0.80000")


def test_usage_changes_keep_the_counter_equal_to_the_rows():
    budget = budget_create(org="acme", userid="u-1", period="day", limit=Decimal(10), now=USE_TIME)
    rows = [usage_row(amount=Decimal("0.25")) for _ in range(4)] + [usage_row(userid="u-2")]
    insert_usage(rows)
    budget_usage_apply(changes=[_change(row, row["amount"]) for row in rows])
    LLMUsage.objects.filter(pk=rows[0]["id"]).delete()
    budget_usage_apply(changes=[_change(rows[0], -rows[0]["amount"])])

    spent = budget_status(budget=budget, now=USE_TIME).spent
    scan = spent_in_period(
        org="acme",
        userid="u-1",
        start=datetime(2026, 11, 20, tzinfo=UTC),
        end=datetime(2026, 11, 21, tzinfo=UTC),
    )

    assert spent == scan == Decimal("0.75")
    assert budget_reconcile(budget=budget, now=USE_TIME) == spent


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_record_ingested_while_its_budget_is_being_created_counts_once():
    """The budget's seed scan cannot see a record not committed yet, so the record's ingest must see the
    budget: its read waits for the creation (the org's advisory lock) and is not answered from a
    snapshot taken before that wait."""
    created = threading.Event()

    def create() -> None:
        try:
            with transaction.atomic():
                budget_create(org="acme", limit=Decimal(10), period="total")  # seeded: 0, no rows yet
                created.set()
                time.sleep(0.5)  # created, not committed: the ingest below starts meanwhile
        finally:
            connection.close()

    creator = threading.Thread(target=create)
    creator.start()
    assert created.wait(timeout=10)
    row = usage_row(amount=Decimal("0.25"), use_time=datetime.now(UTC))
    with transaction.atomic():
        write_usage_rows([row])
        budgets_count_ingested(rows=[row])
    creator.join()

    assert budget_status(budget=Budget.objects.get()).spent == Decimal("0.25")


def _change(row: dict, amount: Decimal) -> UsageChange:
    return UsageChange(
        userorgid=row["userorgid"],
        userid=row["userid"],
        token_name=row["token_name"],
        model_name=row["model_name"],
        feature=row["feature"],
        use_time=row["use_time"],
        amount=amount,
    )


# --- the API --------------------------------------------------------------------------------------


@pytest.fixture
def acme_admin(make_key) -> dict[str, str]:
    return bearer(make_key(org="acme", role="admin"))


def test_an_org_admin_creates_its_own_orgs_budget_and_reads_spent_held_remaining(api, acme_admin):
    make_accounts()
    body = {"limit": "5", "period": "day", "action": "block", "token_name": "k-1", "webhook_secret": "s3cret"}

    created = api.post("/api/budgets/", body, format="json", **acme_admin)
    hold = api.post(
        "/api/holds/",
        {"transno": "t-1", "token_name": "k-1", "amount": "1"},
        format="json",
        **acme_admin,
    )
    shown = api.get(f"/api/budgets/{created.json()['id']}/", **acme_admin)

    assert created.status_code == 201, created.content
    assert hold.status_code == 403  # an org key never states the amount
    answer = shown.json()
    assert (answer["org"], answer["spent"], answer["held"], answer["remaining"]) == (
        "acme",
        "0.00000",
        "0.00000",
        "5.00000",
    )
    assert answer["has_webhook_secret"] is True and "s3cret" not in shown.content.decode()
    assert answer["period_end"] is not None


@pytest.mark.parametrize("zone", ["America", "Mars/Olympus", "../etc/passwd", ""])
def test_a_budget_in_a_time_zone_that_is_not_one_is_a_400_naming_it(api, acme_admin, zone):
    created = api.post("/api/budgets/", {"limit": "1", "time_zone": zone}, format="json", **acme_admin)

    assert created.status_code == 400, created.content
    assert "time_zone" in created.json()
    assert not Budget.objects.exists()


def test_an_org_key_manages_only_its_own_org(api, acme_admin, acme_reader_key):
    other = budget_create(org="globex", limit=Decimal(1))

    for_globex = api.post("/api/budgets/", {"org": "globex", "limit": "1"}, format="json", **acme_admin)
    by_reader = api.post("/api/budgets/", {"limit": "1"}, format="json", **bearer(acme_reader_key))
    change_globex = api.patch(f"/api/budgets/{other.pk}/", {"limit": "9"}, format="json", **acme_admin)
    fixed = api.patch(f"/api/budgets/{other.pk}/", {"period": "day"}, format="json")

    assert (for_globex.status_code, by_reader.status_code, change_globex.status_code) == (403, 403, 404)
    assert fixed.status_code == 401
    assert Budget.objects.get(pk=other.pk).limit == Decimal(1)


def test_a_budgets_scope_is_fixed_once_created(api, platform_key):
    budget = budget_create(org="acme", limit=Decimal(1))

    response = api.patch(
        f"/api/budgets/{budget.pk}/", {"period": "day"}, format="json", **bearer(platform_key)
    )

    assert response.status_code == 400
    assert "period" in response.json()


def test_admission_prices_the_worst_case_and_answers_402_naming_the_budget(api, acme_key):
    make_accounts()
    ModelPrice.objects.create(
        model_name="gpt-4o",
        kind="sale",
        effective_from=datetime(2020, 1, 1, tzinfo=UTC),
        input_price=Decimal("5"),
        output_price=Decimal("15"),
    )
    budget = budget_create(org="acme", model_name="gpt-4o", limit=Decimal("0.05"), action="block")
    ask = {"transno": "c-1", "model_name": "gpt-4o", "input_tokens": 1000, "max_output_tokens": 2000}

    granted = api.post("/api/holds/", ask, format="json", **bearer(acme_key))
    again = api.post("/api/holds/", ask, format="json", **bearer(acme_key))
    refused = api.post("/api/holds/", ask | {"transno": "c-2"}, format="json", **bearer(acme_key))
    released = api.delete(f"/api/holds/{granted.json()['id']}/", **bearer(acme_key))
    after_release = api.post("/api/holds/", ask | {"transno": "c-3"}, format="json", **bearer(acme_key))

    assert granted.status_code == 201, granted.content
    assert Decimal(granted.json()["amount"]) == Decimal("0.035")  # 1000 x 5 + 2000 x 15 per million
    assert again.status_code == 200 and again.json()["id"] == granted.json()["id"]
    assert refused.status_code == 402
    assert refused.json()["code"] == "budget_exceeded"
    assert refused.json()["budget"] == budget.pk
    assert Decimal(refused.json()["remaining"]) == Decimal("0.015")
    assert released.json()["status"] == "released"
    assert after_release.status_code == 201


def test_admission_without_a_price_or_with_another_orgs_name_is_refused(api, acme_key):
    make_accounts()

    unpriced = api.post(
        "/api/holds/", {"transno": "x", "model_name": "nope"}, format="json", **bearer(acme_key)
    )
    other = api.post(
        "/api/holds/",
        {"transno": "y", "userorgid": "globex", "amount": "1"},
        format="json",
        **bearer(acme_key),
    )

    assert unpriced.status_code == 400 and "model_name" in unpriced.json()
    assert other.status_code == 403
    assert not Hold.objects.exists()


# --- alerts ---------------------------------------------------------------------------------------


class Receiver:
    """A webhook receiver on 127.0.0.1 that checks the signature and fails the first request once."""

    def __init__(self, secret: str, fail_first: int = 1) -> None:
        self.secret = secret
        self.received: list[dict] = []
        self.bad_signatures = 0
        self.fail_first = fail_first
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers["Content-Length"]))
                expected = "sha256=" + hmac.new(receiver.secret.encode(), body, hashlib.sha256).hexdigest()
                if not hmac.compare_digest(self.headers.get("X-Llmlog-Signature", ""), expected):
                    receiver.bad_signatures += 1
                    self.send_response(401)
                elif receiver.fail_first > 0:
                    receiver.fail_first -= 1
                    self.send_response(500)
                else:
                    receiver.received.append(json.loads(body))
                    self.send_response(204)
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "Receiver":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_each_threshold_alerts_once_signed_and_a_500_is_retried_after_its_backoff():
    now = USE_TIME
    with Receiver("hook-secret") as receiver:
        budget = budget_create(
            org="acme",
            limit=Decimal(1),
            period="month",
            action="alert",
            now=now,
            webhook_url=receiver.url,
            webhook_secret="hook-secret",
        )
        budget_usage_apply(changes=[_change(usage_row(), Decimal("0.85"))])

        first = send_budget_alerts(now=now)  # 50 and 80 crossed; 50's first try meets the 500
        too_soon = send_budget_alerts(now=now + timedelta(seconds=10))
        retried = send_budget_alerts(now=now + timedelta(seconds=31))
        budget_usage_apply(changes=[_change(usage_row(), Decimal("0.15"))])
        at_limit = send_budget_alerts(now=now + timedelta(seconds=90))
        nothing_new = send_budget_alerts(now=now + timedelta(seconds=150))

    assert receiver.bad_signatures == 0
    assert (first["crossed"], first.get("retrying"), first.get("delivered")) == (2, 1, 1)
    assert (too_soon["crossed"], too_soon.get("delivered", 0)) == (0, 0)
    assert retried.get("delivered") == 1
    assert (at_limit["crossed"], at_limit.get("delivered")) == (1, 1)
    assert nothing_new["crossed"] == 0 and nothing_new.get("delivered", 0) == 0
    assert sorted(event["threshold"] for event in receiver.received) == [50, 80, 100]
    event = next(e for e in receiver.received if e["threshold"] == 100)
    assert (event["budget"], event["org"], event["spent"], event["limit"]) == (
        budget.pk,
        "acme",
        "1.00000",
        "1.00000",
    )
    assert event["period_start"] == "2026-11-01T00:00:00+00:00"
    fifty = BudgetAlert.objects.get(budget=budget, threshold=50)
    assert (fifty.status, fifty.attempts, fifty.last_status_code) == ("delivered", 2, 204)


def test_an_alert_only_budget_without_a_webhook_records_its_alerts_and_the_command_runs():
    budget = budget_create(org="acme", limit=Decimal(1), action="alert", now=USE_TIME)
    budget_usage_apply(changes=[_change(usage_row(use_time=datetime.now(UTC)), Decimal("2"))])

    call_command("send_budget_alerts")

    assert sorted(BudgetAlert.objects.filter(budget=budget).values_list("threshold", "status")) == [
        (50, "no_webhook"),
        (80, "no_webhook"),
        (100, "no_webhook"),
    ]


# --- admin ----------------------------------------------------------------------------------------


def test_the_budgets_page_shows_spent_held_and_limit_and_creates_a_seeded_budget(admin_client):
    insert_usage([usage_row(amount=Decimal("0.40"), use_time=datetime.now(UTC))])
    budget = budget_create(org="acme", limit=Decimal(1), name="acme monthly")

    page = admin_client.get("/admin/accounting/budget/?q=acme")
    added = admin_client.post(
        "/admin/accounting/budget/add/",
        {
            "org": "acme",
            "name": "acme daily",
            "period": "day",
            "time_zone": "UTC",
            "limit": "2",
            "currency": "USD",
            "thresholds": "[50, 100]",
            "action": "block",
            "alerts-TOTAL_FORMS": "0",  # the alert log inline's management form
            "alerts-INITIAL_FORMS": "0",
        },
    )
    alerts = admin_client.get("/admin/accounting/budgetalert/")

    assert page.status_code == 200 and alerts.status_code == 200
    assert "acme monthly" in page.content.decode() and "40% spent" in page.content.decode()
    assert added.status_code == 302, added.content.decode()[-2000:]
    daily = Budget.objects.get(name="acme daily")
    assert (daily.thresholds, budget_status(budget=daily).spent) == ([50, 100], Decimal("0.40000"))
    assert budget.pk != daily.pk
