"""The admin at 1440x900 (issue 16): the usage, failures and accounts lists show the columns an operator
needs without scrolling sideways, money right-aligned in one format, times 24 h with the zone, and the
site is named llmlog."""

import re

import pytest

from llmlog.demo import load_demo_data
from llmlog.posting import account_pending_usage

pytestmark = pytest.mark.django_db(transaction=True)

WIDTH, HEIGHT = 1440, 900
TIME = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d [A-Z]{3,5}$")
# Or "-" for a record not priced.
MONEY = re.compile(r"^(-?\d{1,3}(,\d{3})*\.\d{5}( [A-Z]{3})?|-)$")
LISTS = {
    "usage": (
        "/admin/llmlog/llmusage/",
        ["when", "userorgid", "userid", "model_name", "tokens", "amount_display", "cost_display", "status"]
        + ["accounting_status"],
    ),
    "failures": (
        "/admin/accounting/accountingfailure/",
        ["last_failed", "transno", "userorgid", "error_code", "attempts", "last_error", "amount_display"],
    ),
    "accounts": (
        "/admin/accounting/account/",
        ["org", "kind", "balance_display", "available", "status"],
    ),
}


@pytest.fixture
def demo(transactional_db) -> None:
    """make run's demo data, posted: accounted rows, failures (the shoestring org, an unpriced model),
    accounts with balances in the thousands."""
    load_demo_data(rows=400)
    account_pending_usage()


@pytest.mark.parametrize("name", list(LISTS))
def test_list_columns_fit_1440_without_scrolling_sideways(logged_in, demo, tmp_path, name) -> None:
    page = logged_in
    page.set_viewport_size({"width": WIDTH, "height": HEIGHT})
    url, columns = LISTS[name]
    page.goto(url)
    page.screenshot(path=str(tmp_path / f"layout-{name}.png"))  # to look at when it fails

    assert page.locator("#site-name").inner_text().strip() == "llmlog"
    assert page.locator("#result_list tbody tr").count() > 0, "the list is empty"
    scroll_width = page.evaluate("document.documentElement.scrollWidth")
    assert scroll_width <= WIDTH, f"{name}: the page scrolls sideways ({scroll_width}px)"
    for column in columns:
        header = page.locator(f"#result_list th.column-{column}")
        assert header.count() == 1, f"{name}: no column {column}"
        box = header.bounding_box()
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= WIDTH, (name, column, box)
        first = page.locator(
            f"#result_list tbody tr:first-child td.field-{column}, "
            f"#result_list tbody tr:first-child th.field-{column}"
        )
        cell = first.bounding_box()
        assert cell["x"] + cell["width"] <= WIDTH, (name, column, cell)
        # One line per row: no cell wraps (a wrapped user id was four lines tall).
        assert cell["height"] < 40, (name, column, cell)


def test_money_and_time_read_the_same_on_every_list(logged_in, demo) -> None:
    page = logged_in
    page.set_viewport_size({"width": WIDTH, "height": HEIGHT})
    checks = {
        "/admin/llmlog/llmusage/": ("when", ["amount_display", "cost_display"]),
        "/admin/accounting/accountingfailure/": ("last_failed", ["amount_display"]),
        "/admin/accounting/account/": (None, ["balance_display"]),
    }
    for url, (time_column, money_columns) in checks.items():
        page.goto(url)
        if time_column:
            for text in page.locator(
                f"#result_list td.field-{time_column}, th.field-{time_column}"
            ).all_inner_texts():
                assert TIME.match(text.strip()), (url, text)
        for column in money_columns:
            cells = page.locator(f"#result_list td.field-{column}")
            for text in cells.all_inner_texts():
                assert MONEY.match(text.strip()), (url, column, text)
            align = cells.first.evaluate("cell => getComputedStyle(cell).textAlign")
            assert align == "right", (url, column, align)
    # A balance is a sum: it carries its currency, thousands separated.
    balances = page.locator("#result_list td.field-balance_display").all_inner_texts()
    assert any(text.strip().endswith(" USD") and "," in text for text in balances), balances


def test_admin_index_links_the_dashboard_on_one_line(logged_in) -> None:
    page = logged_in
    page.set_viewport_size({"width": WIDTH, "height": HEIGHT})
    page.goto("/admin/")

    link = page.locator("#llmlog-dashboard-link a", has_text="Dashboard")
    box = link.bounding_box()
    assert box["width"] > box["height"], box  # was drawn one letter per line
    assert page.title().endswith("llmlog")
