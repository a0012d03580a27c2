"""The dashboard's numbers against hand-computed ones, from the rows and from the hourly rollups."""

import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.contrib.auth.models import Permission
from django.urls import reverse
from django.utils import timezone

from accounting.accounts import account_create
from accounting.budgets import UsageChange, budget_create, budget_usage_apply
from accounting.models import AccountingFailure
from llmlog.charts import bar_list, column_chart, full
from llmlog.dashboard import dashboard_context
from llmlog.models import LLMUsageHistory, UsageRollup
from llmlog.rollups import build_usage_rollups
from tests.factories import make_usage

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 11, 20, 15, 0, 30, tzinfo=UTC)
DASHBOARD = reverse("admin-dashboard")


def failure(*, org: str, status: str = "open") -> AccountingFailure:
    return AccountingFailure.objects.create(
        # the failed record itself is 60 days old: outside every figure of the dashboard
        usage_id=make_usage(userorgid=org, accounting_status="failed", use_time=NOW - timedelta(days=60)).pk,
        transno=f"f-{org}-{status}",
        userorgid=org,
        use_date=NOW.date(),
        error_code="no_account",
        first_failed_at=NOW,
        last_failed_at=NOW,
        status=status,
    )


@pytest.fixture
def usage(settings) -> None:
    """Today (2026-11-20, UTC): acme 3 x gpt-4o (150 tokens, 0.01, cost 0.008), one 30 s before NOW;
    globex 1 x claude-sonnet-4 10 s before NOW (1200 tokens, 0.50, cost 0.40). Yesterday: acme 2 x
    gpt-4o in history. 40 days ago: acme 1, outside the charts. Failures: acme open, globex open,
    acme resolved."""
    settings.TIME_ZONE = "UTC"
    for hour, minute, second in ((9, 0, 0), (12, 0, 0), (15, 0, 0)):
        make_usage(userorgid="acme", use_time=NOW.replace(hour=hour, minute=minute, second=second))
    make_usage(
        userorgid="globex",
        model_name="claude-sonnet-4",
        use_time=NOW - timedelta(seconds=10),
        input_tokens=1000,
        output_tokens=200,
        amount=Decimal("0.50000"),
        cost=Decimal("0.40000"),
    )
    for hour in (8, 20):
        make_usage(model=LLMUsageHistory, userorgid="acme", use_time=datetime(2026, 11, 19, hour, tzinfo=UTC))
    make_usage(userorgid="acme", use_time=NOW - timedelta(days=40))
    for org, status in (("acme", "open"), ("globex", "open"), ("acme", "resolved")):
        failure(org=org, status=status)


def bars(chart: dict) -> dict[str, str]:
    return {bar.label: bar.value for bar in chart["bars"]}


def check_all_orgs(context: dict) -> None:
    today = context["today"]
    assert today["requests"] == 4
    assert today["total_tokens"] == 3 * 150 + 1200
    assert today["amount"] == Decimal("0.53000")
    assert today["cost"] == Decimal("0.42400")
    assert today["margin"] == Decimal("0.10600")
    assert (today["rpm"], today["tpm"]) == (2, 150 + 1200)
    assert context["open_failures"] == 2

    charts = context["charts"]
    requests = bars(charts["requests"])
    assert len(requests) == 30
    assert min(requests) == "2026-10-22" and max(requests) == "2026-11-20"
    assert requests["2026-11-20"] == "4 requests"
    assert requests["2026-11-19"] == "2 requests"
    assert sum(int(value.split()[0]) for value in requests.values()) == 6
    assert bars(charts["tokens"])["2026-11-19"] == "300 tokens"
    assert bars(charts["amount"])["2026-11-20"] == "0.53000 USD"
    assert list(bars(charts["models"]).items()) == [
        ("claude-sonnet-4", "0.50000 USD"),
        ("gpt-4o", "0.05000 USD"),
    ]
    assert list(bars(charts["orgs"]).items()) == [("globex", "0.50000 USD"), ("acme", "0.05000 USD")]


def test_numbers_from_the_rows(usage) -> None:
    check_all_orgs(dashboard_context(params={}, now=NOW))


def test_numbers_from_the_rollups_are_the_same(usage) -> None:
    build_usage_rollups(now=NOW)
    assert UsageRollup.objects.filter(hour__lt=NOW.replace(hour=14, minute=0, second=0)).exists()
    check_all_orgs(dashboard_context(params={}, now=NOW))


def test_one_org(usage) -> None:
    context = dashboard_context(params={"org": "acme"}, now=NOW)
    today = context["today"]
    assert (today["requests"], today["total_tokens"], today["amount"]) == (3, 450, Decimal("0.03000"))
    assert (today["rpm"], today["tpm"]) == (1, 150)
    assert context["open_failures"] == 1
    assert bars(context["charts"]["requests"])["2026-11-20"] == "3 requests"
    assert list(bars(context["charts"]["orgs"])) == ["acme"]


def test_each_chart_has_its_own_org(usage) -> None:
    context = dashboard_context(
        params={"org": "acme", "orgs_org": "all", "models_org": "globex", "tokens_org": "globex"}, now=NOW
    )
    charts = context["charts"]
    assert context["today"]["requests"] == 3  # the page's org
    assert bars(charts["requests"])["2026-11-20"] == "3 requests"  # follows the page
    assert bars(charts["tokens"])["2026-11-20"] == "1,200 tokens"
    assert list(bars(charts["models"])) == ["claude-sonnet-4"]
    assert list(bars(charts["orgs"])) == ["globex", "acme"]


def test_days_follow_the_operators_time_zone(settings) -> None:
    settings.TIME_ZONE = "America/New_York"  # UTC-5 in November
    make_usage(use_time=datetime(2026, 11, 20, 3, 0, tzinfo=UTC))  # the 19th in New York
    make_usage(use_time=datetime(2026, 11, 20, 6, 0, tzinfo=UTC))  # the 20th
    context = dashboard_context(params={}, now=NOW)
    assert context["today"]["requests"] == 1
    requests = bars(context["charts"]["requests"])
    assert (requests["2026-11-19"], requests["2026-11-20"]) == ("1 request", "1 request")


def test_the_page_draws_its_charts_as_svg(admin_client, django_assert_max_num_queries) -> None:
    make_usage(userorgid="acme")
    make_usage(userorgid="globex", model_name="o3-mini")
    with django_assert_max_num_queries(25):
        response = admin_client.get(DASHBOARD, {"org": ""})
    assert response.status_code == 200
    html = response.content.decode()
    for chart in ("requests", "tokens", "amount", "models", "orgs"):
        svg = re.search(rf'<svg [^>]*data-chart="{chart}".*?</svg>', html, re.S)
        assert svg, chart
        expected = 30 if chart in ("requests", "tokens", "amount") else 2
        assert len(re.findall(r'<rect class="bar"', svg.group(0))) >= expected
        assert f'name="{chart}_org"' in html
    assert 'id="dashboard-org"' in html and ">globex</option>" in html
    assert (
        "http://" not in html.replace("http://www.w3.org", "") and "https://" not in html
    )  # no outside asset


def test_charts_geometry() -> None:
    chart = column_chart(points=[("2026-11-01", 10), ("2026-11-02", 5), ("2026-11-03", 0)], unit="requests")
    heights = [bar.height for bar in chart["bars"]]
    assert heights[0] > 0 and heights[1] == pytest.approx(heights[0] / 2, abs=0.01) and heights[2] == 0
    assert chart["has_data"] and chart["total"] == "15"
    assert not column_chart(points=[("2026-11-01", 0)], unit="x")["has_data"]
    listed = bar_list(rows=[("a", Decimal("2.00000")), ("b", Decimal("1.00000"))])
    widths = [bar.width for bar in listed["bars"]]
    assert widths[1] == pytest.approx(widths[0] / 2)
    assert not bar_list(rows=[])["has_data"]


@pytest.mark.parametrize(
    ("points", "ticks"),
    [
        ([707, 354], ["0", "200", "400", "600", "800"]),
        ([3], ["0", "1", "2", "3"]),
        ([123_456], ["0", "50k", "100k", "150k"]),
        ([Decimal("37.62"), Decimal("0.9")], ["0", "10", "20", "30", "40"]),
        ([Decimal("0.00600")], ["0", "0.002", "0.004", "0.006"]),
    ],
)
def test_y_axis_ticks_are_round_numbers_above_the_highest_column(points, ticks) -> None:
    chart = column_chart(points=[(f"2026-11-{day + 1:02d}", value) for day, value in enumerate(points)])

    assert [tick["text"] for tick in chart["y_ticks"]] == ticks
    top_tick = min(tick["y"] for tick in chart["y_ticks"])
    assert all(bar.y >= top_tick for bar in chart["bars"])  # no column above the axis


def test_money_reads_the_same_on_every_figure(usage) -> None:
    today = dashboard_context(params={}, now=NOW)["today"]["display"]

    assert today["amount"] == "0.53000 USD"
    assert today["cost"] == "0.42400 USD"
    assert today["margin"] == "0.10600 USD"
    assert full(Decimal("12345.6"), currency="USD") == "12,345.60000 USD"
    assert full(1234567) == "1,234,567"


def test_money_carries_the_orgs_currency(usage) -> None:
    for org in ("acme", "globex"):
        account_create(org=org, kind="customer", currency="CNY")

    page = dashboard_context(params={}, now=NOW)

    assert page["today"]["display"]["amount"] == "0.53000 CNY"
    assert page["charges"]["display"]["amount"].endswith(" CNY")
    assert all(bar.value.endswith(" CNY") for bar in page["charts"]["models"]["bars"])
    assert page["mixed_currencies"] == []


def test_sums_over_orgs_of_different_currencies_say_so_and_carry_none(usage, admin_client) -> None:
    account_create(org="acme", kind="customer", currency="CNY")
    account_create(org="globex", kind="customer", currency="USD")

    every_org = dashboard_context(params={}, now=NOW)
    one_org = dashboard_context(params={"org": "acme"}, now=NOW)

    assert every_org["mixed_currencies"] == ["CNY", "USD"]
    assert every_org["today"]["display"]["amount"] == "0.53000"  # a bare sum: no one currency is right
    assert one_org["mixed_currencies"] == [] and one_org["today"]["display"]["amount"].endswith(" CNY")
    page = admin_client.get(DASHBOARD).content.decode()
    assert "Amounts add CNY, USD together" in page


# --- the org's budgets ----------------------------------------------------------------------------


def spend(*, org: str, amount: str, at: datetime) -> None:
    change = UsageChange(
        userorgid=org,
        userid="",
        token_name="",
        model_name="",
        feature="",
        use_time=at,
        amount=Decimal(amount),
    )
    budget_usage_apply(changes=[change])


def test_an_orgs_budgets_with_spent_limit_and_remaining(settings) -> None:
    settings.TIME_ZONE = "UTC"
    monthly = budget_create(org="acme", name="acme monthly", limit=Decimal("4.00"), period="month", now=NOW)
    budget_create(org="globex", name="globex monthly", limit=Decimal("1.00"), now=NOW)
    spend(org="acme", amount="3.40", at=NOW)
    spend(org="acme", amount="9.00", at=NOW - timedelta(days=40))  # an earlier month

    context = dashboard_context(params={"org": "acme"}, now=NOW)

    (row,) = context["budgets"]
    assert row["id"] == monthly.pk
    assert (row["spent"], row["limit"], row["remaining"]) == ("3.40000 USD", "4.00000 USD", "0.60000 USD")
    assert (row["spent_percent"], row["level"]) == (85, "near")
    assert dashboard_context(params={}, now=NOW)["budgets"] is None  # every org: no budget list


def test_the_org_page_lists_its_budgets_only(admin_client) -> None:
    budget_create(org="acme", name="acme-cap", limit=Decimal("2.00"), period="day")
    budget_create(org="globex", name="globex-cap", limit=Decimal("2.00"), period="day")
    spend(org="acme", amount="0.50", at=timezone.now())

    html = admin_client.get(DASHBOARD, {"org": "acme"}).content.decode()

    section = re.search(r'<section class="llmlog-budgets" id="budgets">.*?</section>', html, re.S)
    assert section, "no budgets section"
    budgets = section.group(0)
    assert "acme-cap" in budgets and "globex-cap" not in budgets
    assert 'title="25% spent, 0% held"' in budgets and 'style="width:25%"' in budgets
    assert "0.50000" in budgets and "1.50000" in budgets  # spent and remaining
    assert "org__exact=acme" in budgets
    assert 'id="budgets"' not in admin_client.get(DASHBOARD).content.decode()  # no org chosen


def test_a_viewer_who_may_not_see_budgets_gets_no_budget_list(client, django_user_model) -> None:
    budget_create(org="acme", name="acme-cap", limit=Decimal("2.00"))
    viewer = django_user_model.objects.create_user("viewer", password="x", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_llmusage"))
    client.force_login(viewer)

    response = client.get(DASHBOARD, {"org": "acme"})

    assert response.status_code == 200
    assert "acme-cap" not in response.content.decode()
