"""A month of the ledger's charges as FOCUS 1.2 (FinOps Open Cost and Usage Specification) CSV.

One row per org, model and day (the day in TIME_ZONE; ChargePeriodStart/End are that day's midnights in
UTC), in each currency the records were charged in. The rows are the records the ledger has charged:
`accounted` ones (a `usage` ledger transaction each, of the record's `amount`) and `skipped` ones
(nothing billable, so they add their tokens and no cost); a pending or failed record is not charged
yet, and appears in the export of its month once it is posted. So the Usage rows' BilledCost adds up
to the ledger's usage charges of the month's records, which a test holds.

Re-pricing adjustments (`adjustment` transactions of an applied re-pricing) follow as ChargeCategory
"Adjustment" rows in the month the ledger posted them (as the month's statement counts them), one per
org, model, currency and day of the usage they adjust (ChargePeriodStart/End that day; ChargeClass
"Correction" when that day is before the month: it corrects an earlier month's bill), with Δamount as
their cost and no quantities. The whole file's BilledCost is then what the month's ledger charged.

Costs, as FOCUS defines them, for a gateway without negotiated or commitment discounts:
- BilledCost: what the org was charged (`amount`), the basis of its invoice;
- ListCost and ContractedCost: the same. The price book is the gateway's list price and the only
  price it charges: no contract or commitment discount sits between list price and the bill;
- EffectiveCost: the same. Nothing was paid up front, so there is nothing to amortise.
The model owner's `cost` (what the platform pays on) is not a customer's bill and stays out.

Tokens: ConsumedQuantity and PricingQuantity are the total tokens (input + output) in "Tokens"; each
kind has its own `x_` column (FOCUS's prefix for a provider's own columns), beside x_Requests.

Text cells that a spreadsheet would run as a formula are neutralised as in the admin's CSV exports.
"""

import csv
import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal

from django.conf import settings
from django.db.models import Count, DecimalField, F, Q, Sum
from django.db.models.functions import TruncDate

from accounting.models import RepricingItem
from core.money import quantize_money
from llmlog.csv_export import neutralise
from llmlog.exports.period import ExportPeriod
from llmlog.models import TOKEN_COUNT_FIELDS, AccountingStatus
from llmlog.queries import UsageQuery
from llmlog.replicas import PRIMARY, reading_from
from llmlog.selectors.records import usage_matching
from llmlog.selectors.sums import sum_of

# The records the ledger has charged (see the module's docstring).
CHARGED = (AccountingStatus.ACCOUNTED, AccountingStatus.SKIPPED)
# Grouped rows fetched per round trip: a month of a big gateway is orgs x models x days rows.
CHUNK_SIZE = 2000

USAGE, ADJUSTMENT = "Usage", "Adjustment"
SERVICE_CATEGORY = "AI and Machine Learning"
SERVICE_SUBCATEGORY = "Generative AI"
SERVICE_NAME = "LLM Gateway"
TOKENS = "Tokens"

# The x_ columns for what each record counts, in the usage record's words.
X_COLUMNS = {
    "input_tokens": "x_InputTokens",
    "output_tokens": "x_OutputTokens",
    "cached_tokens": "x_CachedTokens",
    "cache_creation_tokens": "x_CacheCreationTokens",
    "reasoning_tokens": "x_ReasoningTokens",
    "image_input_tokens": "x_ImageInputTokens",
    "web_search_count": "x_WebSearchCount",
}
assert set(X_COLUMNS) == set(TOKEN_COUNT_FIELDS), "every count of a usage record has its x_ column"

# FOCUS columns in the specification's (alphabetical) order, then ours.
FOCUS_COLUMNS = (
    "BilledCost",
    "BillingAccountId",
    "BillingAccountName",
    "BillingCurrency",
    "BillingPeriodEnd",
    "BillingPeriodStart",
    "ChargeCategory",
    "ChargeClass",
    "ChargeDescription",
    "ChargeFrequency",
    "ChargePeriodEnd",
    "ChargePeriodStart",
    "ConsumedQuantity",
    "ConsumedUnit",
    "ContractedCost",
    "EffectiveCost",
    "InvoiceIssuerName",
    "ListCost",
    "PricingQuantity",
    "PricingUnit",
    "ProviderName",
    "PublisherName",
    "ResourceId",
    "ResourceName",
    "ResourceType",
    "ServiceCategory",
    "ServiceName",
    "ServiceSubcategory",
    "SubAccountId",
    "SubAccountName",
    "x_Requests",
    *X_COLUMNS.values(),
)


@dataclass(frozen=True)
class FocusGroup:
    """The charged records of one org, model, provider and currency on one day (category Usage), or
    the re-pricing adjustments posted in the month for one org's model, currency and day of use
    (category Adjustment: no tokens; `records` is how many records they adjust)."""

    day: date
    org: str
    model_name: str
    provider: str
    currency: str
    requests: int
    tokens: dict[str, int] | None
    total_tokens: int | None
    amount: Decimal
    category: str = USAGE


def focus_groups(
    *, period: ExportPeriod, org: str = "", userorgid: str | None = None
) -> Iterator[FocusGroup]:
    """The month's charged records (of the caller's `org`, "" = every org; of `userorgid` when given)
    grouped by day, org, model, provider and currency, in that order: one grouped query over hot and
    history (llmusage_all), read in chunks."""
    charged = Q(accounting_status__in=CHARGED)
    query = UsageQuery(org=org, userorgid=userorgid, start=period.start, end=period.end, where=charged)
    sums = {name: sum_of(name) for name in (*TOKEN_COUNT_FIELDS, "total_tokens")}
    keys = ("day", "userorgid", "model_name", "provider", "currency")
    with reading_from(PRIMARY):  # as the adjustments, from the ledger: a bill made of one database's state
        records = usage_matching(query=query)
    groups = (
        records.order_by()
        .annotate(day=TruncDate("use_time", tzinfo=period.zone))
        .values(*keys)
        .annotate(requests=Count("id"), amount=Sum("amount"), **sums)
        .order_by(*keys)
    )
    for group in groups.iterator(chunk_size=CHUNK_SIZE):
        yield FocusGroup(
            day=group["day"],
            org=group["userorgid"],
            model_name=group["model_name"],
            provider=group["provider"],
            currency=group["currency"],
            requests=group["requests"],
            tokens={name: int(group[name] or 0) for name in TOKEN_COUNT_FIELDS},
            total_tokens=int(group["total_tokens"] or 0),
            amount=quantize_money(group["amount"] or 0),
        )


def adjustment_groups(
    *, period: ExportPeriod, org: str = "", userorgid: str | None = None
) -> Iterator[FocusGroup]:
    """The re-pricing adjustments the ledger posted in the month (by the adjustment's time, as the
    month's statement counts them), per day of use, org, model and currency: Δamount of each applied
    item (`accounting.models.RepricingItem`), so they add up to the month's adjustment transactions of
    re-pricings. A group whose charge did not change (only the owner's cost did) is left out."""
    items = RepricingItem.objects.filter(
        adjustment__isnull=False,
        adjustment__created_at__gte=period.start,
        adjustment__created_at__lt=period.end,
    )
    for scope in (org or None, userorgid):
        if scope is not None:
            items = items.filter(userorgid=scope)
    keys = ("use_date", "userorgid", "model_name", "currency")
    delta = Sum(F("new_amount") - F("old_amount"), output_field=DecimalField())
    groups = items.values(*keys).annotate(records=Count("id"), amount=delta).order_by(*keys)
    for group in groups.iterator(chunk_size=CHUNK_SIZE):
        amount = quantize_money(group["amount"] or 0)  # SQLite sums decimals as floating point
        if amount:
            yield FocusGroup(
                day=group["use_date"],
                org=group["userorgid"],
                model_name=group["model_name"],
                provider="",
                currency=group["currency"],
                requests=group["records"],
                tokens=None,
                total_tokens=None,
                amount=amount,
                category=ADJUSTMENT,
            )


def focus_row(group: FocusGroup, *, period: ExportPeriod, provider_name: str) -> dict[str, str]:
    """One FOCUS row (column -> text) for a group of usage or of adjustments."""
    start, end = period.day_bounds(group.day)
    # The gateway's text (org, model, provider) made inert for a spreadsheet; numbers are ours.
    org, model, provider, currency = (
        neutralise(text) for text in (group.org, group.model_name, group.provider, group.currency)
    )
    money = str(group.amount)
    row = {
        "BilledCost": money,
        "BillingAccountId": org,
        "BillingAccountName": org,
        "BillingCurrency": currency,
        "BillingPeriodEnd": utc_text(period.end),
        "BillingPeriodStart": utc_text(period.start),
        "ChargeCategory": group.category,
        # An adjustment of usage of an earlier month corrects what that month's invoice billed.
        "ChargeClass": "Correction" if start < period.start else "",
        "ChargeDescription": neutralise(_description(group)),
        "ChargeFrequency": "Usage-Based",
        "ChargePeriodEnd": utc_text(end),
        "ChargePeriodStart": utc_text(start),
        "ContractedCost": money,
        "EffectiveCost": money,
        "InvoiceIssuerName": provider_name,
        "ListCost": money,
        "ProviderName": provider_name,
        "PublisherName": provider or provider_name,
        "ResourceId": model,
        "ResourceName": model,
        "ResourceType": "Model",
        "ServiceCategory": SERVICE_CATEGORY,
        "ServiceName": SERVICE_NAME,
        "ServiceSubcategory": SERVICE_SUBCATEGORY,
        "SubAccountId": org,
        "SubAccountName": org,
    }
    return row | _quantities(group)


def _description(group: FocusGroup) -> str:
    day = group.day.isoformat()
    if group.category == ADJUSTMENT:
        return f"Re-pricing adjustment of {group.model_name} usage on {day}: {group.requests} records"
    return f"{group.model_name} usage on {day}: {group.requests} requests, {group.total_tokens} tokens"


def _quantities(group: FocusGroup) -> dict[str, str]:
    """What was consumed: tokens for usage; nothing for an adjustment (FOCUS: ConsumedQuantity is null
    unless the charge is Usage)."""
    if group.tokens is None:
        return dict.fromkeys(("ConsumedQuantity", "ConsumedUnit", "PricingQuantity", "PricingUnit"), "") | {
            "x_Requests": "",
            **dict.fromkeys(X_COLUMNS.values(), ""),
        }
    tokens = str(group.total_tokens)
    return {
        "ConsumedQuantity": tokens,
        "ConsumedUnit": TOKENS,
        "PricingQuantity": tokens,
        "PricingUnit": TOKENS,
        "x_Requests": str(group.requests),
        **{column: str(group.tokens[name]) for name, column in X_COLUMNS.items()},
    }


def utc_text(moment: datetime) -> str:
    """ISO 8601 in UTC with Z, as FOCUS writes its date-times: 2026-11-01T00:00:00Z."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class _Echo:
    """A file whose write returns what it was given: csv.writer then formats one line at a time."""

    def write(self, value: str) -> str:
        return value


def focus_csv_lines(*, period: ExportPeriod, org: str = "", userorgid: str | None = None) -> Iterator[str]:
    """The FOCUS CSV of `period` (as focus_groups), line by line: the header, the Usage rows, then the
    Adjustment rows."""
    writer = csv.writer(_Echo(), lineterminator="\r\n")
    provider_name = settings.LLMLOG_FOCUS_PROVIDER_NAME
    yield writer.writerow(FOCUS_COLUMNS)
    groups = itertools.chain(
        focus_groups(period=period, org=org, userorgid=userorgid),
        adjustment_groups(period=period, org=org, userorgid=userorgid),
    )
    for group in groups:
        row = focus_row(group, period=period, provider_name=provider_name)
        yield writer.writerow([row[column] for column in FOCUS_COLUMNS])
