"""The operator's dashboard (/admin/dashboard/): today's figures and the last 30 days in charts.

Numbers come from llmlog.selectors.stats.usage_stats, which reads closed hours from the hourly rollups and
only the rest from the rows, so the page stays fast on millions of records. Charts are SVG drawn by
the template from the geometry llmlog.charts computes: no script and no asset from the internet.

Every chart can be narrowed to one org: `org` narrows the whole page, and `requests_org`, `tokens_org`,
`amount_org`, `models_org`, `orgs_org` one chart each ("" follows `org`, "all" shows every org).
Narrowed to an org, the page lists that org's budgets (spent, held, limit, remaining of the current period,
as the budgets admin shows them) for viewers who may see budgets. "Provider cost drift" lists the rows of
the last 30 days whose reported cost is furthest from the computed one (llmlog.selectors.drift).

Money carries the currency of the sums (`sums_currency`): the org's, or every org's when they share one.
The rollups add amounts without their currency, so where the orgs' currencies differ the page shows the
sums bare and says which currencies they add together.
"""

from collections.abc import Mapping
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any
from urllib.parse import quote

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest
from django.template.response import TemplateResponse
from django.urls import NoReverseMatch, reverse
from django.utils import timezone

from accounting.budgets import budget_statuses
from accounting.models import Account, AccountingFailure, Budget
from core.admin import MAX_FILTER_VALUES, distinct_values
from core.formats import money_text
from core.text import text_problem
from llmlog.charts import bar_list, column_chart, full
from llmlog.models import LLMUsage, LLMUsageHistory
from llmlog.queries import UsageQuery
from llmlog.replicas import read_alias, replica_read
from llmlog.selectors.drift import BY_DELTA, usage_cost_drift
from llmlog.selectors.stats import usage_stats, usage_sums_by_org

CHART_DAYS = 30
TOP = 10
ALL_ORGS = "all"
# The charts by day: the field each draws and its unit.
DAY_CHARTS_FIELDS = {
    "requests": ("requests", "requests"),
    "tokens": ("total_tokens", "tokens"),
    "amount": ("amount", ""),
}
DAY_CHARTS = tuple(DAY_CHARTS_FIELDS)
CHARTS = (*DAY_CHARTS, "models", "orgs")
ORG_MAX_LENGTH = 64  # userorgid's length
MAX_ORG_BUDGETS = 50  # an org has a few; the budgets admin lists every one


# --- numbers -------------------------------------------------------------------------------------


def _day_start(day: date) -> datetime:
    return timezone.make_aware(datetime.combine(day, time()), timezone.get_current_timezone())


def dashboard_today(*, org: str = "", now: datetime, currency: str = "") -> dict[str, Any]:
    """Today (in TIME_ZONE) for one org or all: requests, tokens, amount, cost, margin, rpm, tpm."""
    today = timezone.localdate(now)
    # Today as a time range, as the charts' days are: its closed hours come from the rollups (a use_date
    # filter reads every row of the day: llmlog.selectors.rollup_reads).
    start, end = _day_start(today), _day_start(today + timedelta(days=1))
    stats = usage_stats(query=UsageQuery(start=start, end=end, userorgid=org or None), now=now)
    figures = {
        "day": today,
        "requests": stats["requests"],
        "total_tokens": stats["total_tokens"],
        "amount": stats["amount"],
        "cost": stats["cost"],
        "margin": stats["amount"] - stats["cost"],
        "rpm": stats["rpm"],
        "tpm": stats["tpm"],
    }
    display = {name: full(value, currency=currency) for name, value in figures.items() if name != "day"}
    return {**figures, "display": display}


def month_query(*, org: str = "", now: datetime, days: int = CHART_DAYS) -> UsageQuery:
    """The records of the last `days` days, today included, as whole days in TIME_ZONE."""
    today = timezone.localdate(now)
    start, end = _day_start(today - timedelta(days=days - 1)), _day_start(today + timedelta(days=1))
    return UsageQuery(start=start, end=end, userorgid=org or None)


def dashboard_month(
    *, org: str = "", now: datetime, days: int = CHART_DAYS, currency: str = ""
) -> dict[str, Any]:
    """The last `days` days: {by_day: one entry per day (zero when nothing), by_model: top models by
    amount}, each entry with requests, total_tokens, amount, cost; and {charges: amount, adjustments,
    net_amount} of the days (re-pricing adjustments apart and together: llmlog.repricing)."""
    stats = usage_stats(query=month_query(org=org, now=now, days=days), now=now)
    first = timezone.localdate(now) - timedelta(days=days - 1)
    found = {entry["day"]: entry for entry in stats["by_day"]}
    zero = {"requests": 0, "total_tokens": 0, "amount": Decimal(0), "cost": Decimal(0)}
    by_day = [
        {"day": day, **{name: found.get(day, zero)[name] for name in zero}}
        for day in (first + timedelta(days=n) for n in range(days))
    ]
    by_model = sorted(stats["by_model"], key=lambda entry: (-entry["amount"], entry["model_name"]))
    charges = {name: stats[name] for name in ("amount", "adjustments", "net_amount")}
    charges["display"] = {name: full(value, currency=currency) for name, value in charges.items()}
    return {"by_day": by_day, "by_model": by_model[:TOP], "charges": charges}


def dashboard_drift(*, org: str = "", now: datetime, currency: str = "") -> dict[str, Any]:
    """Provider cost drift of the last CHART_DAYS days: the TOP (day, provider, model) rows by |delta|."""
    report = usage_cost_drift(query=month_query(org=org, now=now), order=BY_DELTA, limit=TOP)
    money = ("cost", "provider_cost", "delta")
    rows = [
        {**row, "display": {name: full(row[name], currency=currency) for name in money}}
        for row in report.rows
    ]
    return {"rows": rows, "threshold_percent": report.threshold_percent}


def open_failures(*, org: str = "") -> int:
    """Open accounting failures (served by the partial index on open failures, or the org's index)."""
    failures = AccountingFailure.objects.filter(status=AccountingFailure.Status.OPEN)
    return (failures.filter(userorgid=org) if org else failures).count()


@replica_read
def known_orgs() -> list[str]:
    """Every userorgid in usage, hot or history (read from their indexes), for the org selects; on a
    replica when one is fresh, as the dashboard's other usage reads (llmlog.replicas)."""
    orgs = {
        *distinct_values(model=LLMUsage, column="userorgid", using=read_alias()),
        *distinct_values(model=LLMUsageHistory, column="userorgid", using=read_alias()),
    }
    return sorted(org for org in orgs if org)[:MAX_FILTER_VALUES]


def org_budgets(*, org: str, now: datetime) -> list[dict[str, Any]]:
    """The org's budgets in its current periods (two queries besides the budgets': budget_statuses),
    each with its figures as text and the bar's shares of the limit in percent."""
    budgets = list(Budget.objects.filter(org=org).order_by("id")[:MAX_ORG_BUDGETS])
    rows = []
    for status in budget_statuses(budgets=budgets, now=now):
        budget = status.budget
        spent = min(100, int(status.spent * 100 / budget.limit))
        held = min(100 - spent, int(status.held * 100 / budget.limit))
        rows.append(
            {
                "id": budget.pk,
                "label": str(budget),
                "period": budget.period,
                "action": budget.action,
                "spent": money_text(status.spent, currency=budget.currency),
                "held": money_text(status.held, currency=budget.currency),
                "limit": money_text(budget.limit, currency=budget.currency),
                "remaining": money_text(status.remaining, currency=budget.currency),
                "spent_percent": spent,
                "held_percent": held,
                # The budgets admin's colours: over the limit, past 80 %, below.
                "level": "over" if spent >= 100 else "near" if spent >= 80 else "ok",
            }
        )
    return rows


# --- the sums' currency ------------------------------------------------------------------------


def sums_currency(org: str = "") -> tuple[str, list[str]]:
    """(the currency of the sums of `org`, "" = every org; the currencies they add together). From the
    customer accounts, since posting holds each record to its org's account currency; with no account,
    the records' default. A currency of "" means the orgs' currencies differ, listed in the second."""
    accounts = Account.objects.filter(kind=Account.Kind.CUSTOMER)
    if org:
        accounts = accounts.filter(org=org)
    currencies = sorted(set(accounts.values_list("currency", flat=True).distinct()))
    if not currencies:
        return LLMUsage._meta.get_field("currency").default, []
    return (currencies[0], []) if len(currencies) == 1 else ("", currencies)


# --- the page ------------------------------------------------------------------------------------


def _org_param(params: Mapping[str, str], name: str) -> str:
    return (params.get(name) or "").strip()[:ORG_MAX_LENGTH]


def dashboard_context(
    *,
    params: Mapping[str, str],
    now: datetime | None = None,
    with_failures: bool = True,
    with_budgets: bool = True,
) -> dict[str, Any]:
    """Everything the dashboard shows, for the query parameters `org` and `<chart>_org` (see the
    module's docstring). Each distinct org asked for is read once. `open_failures` is None without
    `with_failures` (the viewer may not see failures); `budgets` is None without `with_budgets` or
    without an org."""
    now = now or timezone.now()
    org = _org_param(params, "org")
    chart_orgs = {}
    for chart in CHARTS:
        chosen = _org_param(params, f"{chart}_org")
        chart_orgs[chart] = "" if chosen == ALL_ORGS else (chosen or org)

    currencies = {of: sums_currency(of) for of in {org, *chart_orgs.values()}}
    currency = {of: found for of, (found, _) in currencies.items()}
    months: dict[str, dict[str, Any]] = {}
    for of in {org, *(chart_orgs[chart] for chart in (*DAY_CHARTS, "models"))}:
        months[of] = dashboard_month(org=of, now=now, currency=currency[of])
    by_org = usage_sums_by_org(query=month_query(org=chart_orgs["orgs"], now=now), now=now)[:TOP]

    def day_chart(chart: str) -> dict[str, Any]:
        name, unit = DAY_CHARTS_FIELDS[chart]
        points = [(entry["day"].isoformat(), entry[name]) for entry in months[chart_orgs[chart]]["by_day"]]
        return column_chart(points=points, unit=unit, currency=currency[chart_orgs[chart]])

    by_model = months[chart_orgs["models"]]["by_model"]
    return {
        "now": timezone.localtime(now),
        "time_zone": timezone.get_current_timezone_name(),
        "org": org,
        "chart_orgs": {chart: _org_param(params, f"{chart}_org") for chart in CHARTS},
        "orgs": known_orgs(),
        "today": dashboard_today(org=org, now=now, currency=currency[org]),
        "charges": months[org]["charges"],
        "mixed_currencies": currencies[org][1],
        "open_failures": open_failures(org=org) if with_failures else None,
        "budgets": org_budgets(org=org, now=now) if org and with_budgets else None,
        "drift": dashboard_drift(org=org, now=now, currency=currency[org]),
        "days": CHART_DAYS,
        "charts": {
            **{chart: day_chart(chart) for chart in DAY_CHARTS},
            "models": bar_list(
                rows=[(entry["model_name"], entry["amount"]) for entry in by_model],
                currency=currency[chart_orgs["models"]],
            ),
            "orgs": bar_list(
                rows=[(entry["userorgid"], entry["amount"]) for entry in by_org],
                currency=currency[chart_orgs["orgs"]],
            ),
        },
    }


def _failures_url(org: str) -> str | None:
    try:
        url = reverse("admin:accounting_accountingfailure_changelist")
    except NoReverseMatch:
        return None
    # The failures page's own filters: status, and the org drop-down (its parameter is userorgid).
    return f"{url}?status__exact=open" + (f"&userorgid={quote(org)}" if org else "")


def _budgets_url(org: str) -> str | None:
    try:
        return f"{reverse('admin:accounting_budget_changelist')}?org__exact={quote(org)}"  # its org filter
    except NoReverseMatch:
        return None


def dashboard_view(request: HttpRequest) -> TemplateResponse:
    """/admin/dashboard/: for staff who may view usage; the failures tile for those who may view them."""
    if not request.user.has_perm("llmlog.view_llmusage") and not request.user.has_perm(
        "llmlog.change_llmusage"
    ):
        raise PermissionDenied
    can_see_failures = request.user.has_perm("accounting.view_accountingfailure") or request.user.has_perm(
        "accounting.change_accountingfailure"
    )
    params = request.GET.dict()
    for name, value in request.GET.items():
        problem = text_problem(value)
        if problem:  # no org can be named so: say so and show the page without that choice
            messages.error(request, f"Ignored {name}: {problem}")
            params.pop(name)
    can_see_budgets = request.user.has_perm("accounting.view_budget") or request.user.has_perm(
        "accounting.change_budget"
    )
    context = dashboard_context(params=params, with_failures=can_see_failures, with_budgets=can_see_budgets)
    context.update(
        admin.site.each_context(request),
        title="Dashboard",
        failures_url=_failures_url(context["org"]) if can_see_failures else None,
        usage_url=reverse("admin:llmlog_llmusage_changelist"),
        budgets_url=_budgets_url(context["org"]) if context["budgets"] is not None else None,
    )
    return TemplateResponse(request, "llmlog/dashboard.html", context)
