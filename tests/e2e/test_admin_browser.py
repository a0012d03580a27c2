"""The operator's admin in a real browser: log in, read the dashboard's charts, filter usage by a date
range and an org, export the list as CSV and read it back."""

import csv
import io
from datetime import datetime, time, timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from llmlog.demo import load_demo_data
from tests.factories import make_usage

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def usage(transactional_db) -> dict:
    """Realistic demo traffic (20 orgs over 30 days) plus acme's own calls on a known day."""
    load_demo_data(rows=1500, days=30, seed=11)
    day = timezone.localdate() - timedelta(days=3)
    noon = timezone.make_aware(datetime.combine(day, time(12)))
    acme = [
        make_usage(
            transno=f"acme-{n}",
            userorgid="acme",
            use_time=noon + timedelta(minutes=n),
            input_tokens=1000 * (n + 1),
            output_tokens=100,
            amount=Decimal("0.25000"),
            cost=Decimal("0.20000"),
            username="=SUM(A1:A9)" if n == 0 else "Ada",
        )
        for n in range(3)
    ]
    make_usage(transno="acme-other-day", userorgid="acme", use_time=noon - timedelta(days=2))
    make_usage(transno="globex-same-day", userorgid="globex", use_time=noon)
    make_usage(transno="acme-now", userorgid="acme", use_time=timezone.now() - timedelta(seconds=5))
    return {"day": day, "acme": acme}


def test_dashboard_draws_its_charts(logged_in, usage, screenshots) -> None:
    page = logged_in
    page.click("text=Dashboard")
    page.wait_for_url("**/admin/dashboard/")
    for chart in ("requests", "tokens", "amount"):
        bars = page.locator(f'svg[data-chart="{chart}"] rect.bar')
        assert bars.count() == 30
        heights = [
            float(height) for height in bars.evaluate_all("els => els.map(e => e.getAttribute('height'))")
        ]
        assert sum(1 for height in heights if height > 0) >= 25, chart  # demo traffic on almost every day
        box = page.locator(f'svg[data-chart="{chart}"]').bounding_box()
        assert box["width"] > 300 and box["height"] > 100  # drawn, not just present
    assert page.locator('svg[data-chart="models"] rect.bar').count() >= 5
    assert page.locator('svg[data-chart="orgs"] rect.bar').count() == 10
    assert int(page.locator('[data-figure="requests"] .value').inner_text().replace(",", "")) >= 1
    page.screenshot(path=str(screenshots / "dashboard.png"), full_page=True)

    # One org for the whole page: acme's call of a few seconds ago is today's only one, and its RPM.
    with page.expect_navigation():
        page.select_option("#dashboard-org", "acme")
    assert page.locator('[data-figure="requests"] .value').inner_text() == "1"
    assert page.locator('[data-figure="rpm"] .value').inner_text() == "1"
    assert page.locator('svg[data-chart="orgs"] rect.bar').count() == 1
    # One chart back to every org, the others stay on acme.
    with page.expect_navigation():
        page.select_option('select[name="orgs_org"]', "all")
    assert page.locator('svg[data-chart="orgs"] rect.bar').count() == 10
    assert page.locator('svg[data-chart="models"] rect.bar').count() == 1
    assert page.outside_requests == []


def test_filter_usage_by_date_range_and_org_then_export_csv(logged_in, usage, screenshots) -> None:
    page = logged_in
    page.goto("/admin/llmlog/llmusage/")
    assert page.locator("#result_list tbody tr").count() == 50
    day = usage["day"].isoformat()

    # The from-to picker, then the org drop-down.
    page.fill('input[name="use_time__range__gte"]', day)
    page.fill('input[name="use_time__range__lte"]', day)
    with page.expect_navigation():
        page.click('.admindatefilter input[type="submit"]')
    with page.expect_navigation():
        page.select_option('select[data-filter="userorgid"]', label="acme")
    assert "userorgid=acme" in page.url and "use_time__range__gte=" in page.url
    # acme's three calls of that day (1,100, 2,100 and 3,100 tokens), and nothing else.
    tokens = page.locator("#result_list tbody td.field-tokens")
    assert sorted(tokens.all_inner_texts()) == ["1,100", "2,100", "3,100"]
    assert set(page.locator("#result_list tbody td.field-userorgid").all_inner_texts()) == {"acme"}
    page.screenshot(path=str(screenshots / "usage-list.png"), full_page=False)

    with page.expect_download() as download:
        page.click("a.llmlog-export-csv")
    text = download.value.path().read_text(encoding="utf-8-sig")
    rows = list(csv.DictReader(io.StringIO(text)))
    *records, totals = rows
    assert sorted(row["transno"] for row in records) == ["acme-0", "acme-1", "acme-2"]
    assert {row["userorgid"] for row in records} == {"acme"}
    assert totals["use_time"] == "TOTAL (3 rows)"
    assert totals["input_tokens"] == str(1000 + 2000 + 3000)
    assert Decimal(totals["amount"]) == Decimal("0.75000")
    assert Decimal(totals["cost"]) == Decimal("0.60000")
    assert next(row for row in records if row["transno"] == "acme-0")["username"] == "'=SUM(A1:A9)"
    local = timezone.localtime(usage["acme"][0].use_time)
    assert next(row for row in records if row["transno"] == "acme-0")["use_time"] == local.isoformat(sep=" ")
    assert page.outside_requests == []
