"""The operator's ways to re-price: `manage.py reprice` and the re-pricings admin page."""

import csv
import io
from datetime import UTC, datetime
from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse

from accounting.ledger import ledger_check
from accounting.models import LedgerTransaction, Repricing
from llmlog.dashboard import dashboard_context
from llmlog.repricing import repricing_create
from tests.factories import make_accounts
from tests.llmlog.test_repricing import DAY, DELTA_AMOUNT, accounted, set_prices, usage_row

pytestmark = pytest.mark.django_db


@pytest.fixture
def books():
    make_accounts(customers=("acme", "globex"), funds=Decimal(100))
    set_prices()
    accounted(usage_row(), usage_row(userorgid="globex"))


def reprice(*args: str) -> str:
    out = StringIO()
    call_command("reprice", *args, stdout=out)
    return out.getvalue()


def test_the_command_dry_runs_then_applies_the_kept_dry_run(books):
    output = reprice("--start", str(DAY), "--end", str(DAY))

    repricing = Repricing.objects.get()
    assert repricing.status == "dry_run" and repricing.created_by == "manage.py"
    assert "acme" in output and "globex" in output and str(DELTA_AMOUNT) in output
    assert f"reprice --apply --repricing {repricing.pk}" in output
    assert not LedgerTransaction.objects.filter(kind="adjustment").exists()

    output = reprice("--apply", "--repricing", str(repricing.pk))
    assert "applied" in output and Repricing.objects.get().status == "applied"
    assert LedgerTransaction.objects.filter(kind="adjustment").count() == 2
    assert "applied already" in reprice("--apply", "--repricing", str(repricing.pk))
    assert LedgerTransaction.objects.filter(kind="adjustment").count() == 2
    assert ledger_check().ok


def test_the_command_applies_at_once_within_its_filters(books):
    reprice("--start", str(DAY), "--end", str(DAY), "--org", "globex", "--model", "gpt-4o", "--apply")

    repricing = Repricing.objects.get()
    assert (repricing.status, repricing.userorgid, repricing.records) == ("applied", "globex", 1)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--start", "2026-11-20"), "--start and --end are required"),
        (("--start", "2026-11-20", "--end", "2026-11-01"), "--end: Must not be before start"),
        (("--repricing", "999"), "No re-pricing 999"),
        (("--repricing", "1", "--org", "acme"), "--repricing takes no"),
    ],
)
def test_the_command_refuses_bad_arguments(args, message):
    with pytest.raises(CommandError, match=message):
        reprice(*args)


def test_the_admin_lists_shows_the_report_and_the_csv(admin_client, books):
    repricing = repricing_create(start=DAY, end=DAY)

    listing = admin_client.get(reverse("admin:accounting_repricing_changelist"))
    assert listing.status_code == 200 and b"dry run" in listing.content
    searched = admin_client.get(reverse("admin:accounting_repricing_changelist"), {"q": "acme"})
    assert searched.status_code == 200
    page = admin_client.get(reverse("admin:accounting_repricing_change", args=[repricing.pk]))
    assert page.status_code == 200
    assert b"report per org and model" in page.content.lower() and b"globex" in page.content
    csv_url = reverse("admin:accounting_repricing_records_csv", args=[repricing.pk])
    assert csv_url.encode() in page.content
    answer = admin_client.get(csv_url)
    text = b"".join(answer.streaming_content).decode().lstrip("\ufeff")
    rows = list(csv.DictReader(io.StringIO(text)))
    assert len(rows) == 3 and rows[-1]["usage_id"] == "TOTAL (2 rows)"
    assert admin_client.get(reverse("admin:accounting_repricing_add")).status_code == 403


def test_the_admin_action_applies_once(admin_client, books):
    repricing = repricing_create(start=DAY, end=DAY)
    url = reverse("admin:accounting_repricing_changelist")
    form = {"action": "apply", "_selected_action": [repricing.pk]}

    admin_client.post(url, form, follow=True)
    answer = admin_client.post(url, form, follow=True)

    assert Repricing.objects.get().status == "applied"
    assert LedgerTransaction.objects.filter(kind="adjustment").count() == 2
    assert b"1 were applied already" in answer.content
    assert ledger_check().ok


def test_the_dashboard_shows_charges_and_adjustments_apart_and_together(admin_client, books):
    repricing_create(start=DAY, end=DAY, userorgid="acme", apply=True)
    now = datetime(2026, 11, 22, 12, tzinfo=UTC)

    charges = dashboard_context(params={"org": "acme"}, now=now)["charges"]
    assert charges["amount"] == Decimal("0.006")
    assert charges["adjustments"] == DELTA_AMOUNT
    assert charges["net_amount"] == Decimal("0.006") + DELTA_AMOUNT
    everyone = dashboard_context(params={}, now=now)["charges"]
    assert (everyone["amount"], everyone["adjustments"]) == (Decimal("0.012"), DELTA_AMOUNT)

    page = admin_client.get(reverse("admin-dashboard"), {"org": "acme"})
    assert b'data-figure="adjustments"' in page.content and b'data-figure="net_amount"' in page.content
