"""The failed-accounting page in a real browser: open it, search a transno, give the org an account and
"retry now" it, see the record become accounted, then export the failures as CSV and read it back."""

import csv
import io
from datetime import datetime, time, timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from accounting.accounts import account_create, account_update
from accounting.ledger import ledger_topup
from accounting.models import Account, AccountingFailure
from llmlog.models import LLMUsage
from llmlog.posting import account_pending_usage, retry_failed_accounting
from tests.factories import insert_usage, make_accounts, usage_row

pytestmark = pytest.mark.django_db(transaction=True)

TARGET = "acme-chat-0001"


@pytest.fixture
def failed_postings(transactional_db) -> dict[str, int]:
    """Postings of the last three days that failed for each reason an operator meets: acme has no
    account, globex ran out of money, initech's account is frozen, and nobody priced "mystery-1"."""
    make_accounts(customers=("globex", "initech"), owners=("openai",), funds=Decimal("0.01"))
    account_update(account=Account.objects.get(org="initech", kind="customer"), status="frozen")
    today = timezone.localdate()
    rows = []
    for n in range(12):
        day = today - timedelta(days=n % 3)
        when = timezone.make_aware(datetime.combine(day, time(9 + n % 8, 5 * n % 60)))
        org = ("acme", "acme", "globex", "initech")[n % 4]
        rows.append(
            usage_row(
                transno=f"{org}-chat-{n:04d}",
                userorgid=org,
                userid=f"{org}-user-{n % 3}",
                use_time=when,
                use_date=day,
                created_at=when,
                amount=Decimal("0.04200") * (n + 1),
                cost=Decimal("0.03100") * (n + 1),
            )
        )
    rows.append(
        usage_row(transno="acme-unpriced", model_name="mystery-1", llmid="mystery-1", amount=None, cost=None)
    )
    insert_usage(rows)
    account_pending_usage()
    # initech's were retried once by the schedule: they failed again.
    retry_failed_accounting(
        ids=AccountingFailure.objects.filter(userorgid="initech").values_list("pk", flat=True)
    )
    return dict(AccountingFailure.objects.values_list("transno", "pk"))


def messages_shown(page) -> list[str]:
    return page.locator("ul.messagelist li").all_inner_texts()


def test_search_retry_now_and_export_the_failures(logged_in, failed_postings, screenshots) -> None:
    page = logged_in
    assert TARGET in failed_postings and len(failed_postings) == 13
    with page.expect_navigation():
        page.click("text=Accounting failures")
    rows = page.locator("#result_list tbody tr")
    assert rows.count() == 13
    codes = set(page.locator("#result_list td.field-error_code").all_inner_texts())
    assert codes == {"No Account", "Insufficient Balance", "Account Frozen", "No Price"}
    assert set(page.locator("#result_list td.field-attempts").all_inner_texts()) == {"1", "2"}
    page.set_viewport_size({"width": 1920, "height": 1000})
    page.evaluate("window.scrollTo(0, 0)")
    page.screenshot(path=str(screenshots / "failures.png"), full_page=False)

    # Search the transno: exactly its row.
    page.fill("#searchbar", TARGET)
    with page.expect_navigation():
        page.press("#searchbar", "Enter")
    assert page.locator("#result_list tbody th.field-transno").all_inner_texts() == [TARGET]
    assert page.locator("#result_list td.field-state").inner_text() == "Open"

    # acme gets an account with money (through the services), then "Retry now" on the row.
    account_create(org="acme", kind="customer")
    ledger_topup(org="acme", amount=Decimal(100))
    page.check("#result_list input.action-select")
    page.select_option('select[name="action"]', "retry_now")
    with page.expect_navigation():
        page.click('button[name="index"]')
    assert messages_shown(page) == ["Retried 1 failure(s): 1 succeeded, 0 failed."]
    state = page.locator("#result_list td.field-state").inner_text()
    assert state.startswith("Resolved") and "by operator at" in state
    assert LLMUsage.objects.get(transno=TARGET).accounting_status == "accounted"
    failure = AccountingFailure.objects.get(transno=TARGET)
    assert (failure.status, failure.resolved_by) == ("resolved", "operator")
    assert failure.resolved_at is not None

    # Every failure of globex, from the org drop-down, exported as CSV and read back.
    page.fill("#searchbar", "")
    with page.expect_navigation():
        page.press("#searchbar", "Enter")
    with page.expect_navigation():
        page.select_option('select[data-filter="userorgid"]', label="globex")
    assert "userorgid=globex" in page.url
    with page.expect_download() as download:
        page.click("a.llmlog-export-csv")
    text = download.value.path().read_text(encoding="utf-8-sig")
    *records, totals = list(csv.DictReader(io.StringIO(text)))
    expected = AccountingFailure.objects.filter(userorgid="globex")
    assert sorted(row["transno"] for row in records) == sorted(expected.values_list("transno", flat=True))
    assert {row["error_code"] for row in records} == {"insufficient_balance"}
    assert totals["last_failed_at"] == f"TOTAL ({len(records)} rows)"
    assert Decimal(totals["amount"]) == sum(failure.amount for failure in expected)
    assert page.outside_requests == []
