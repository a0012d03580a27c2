"""A month of the ledger's charges as FOCUS 1.2 (FinOps Open Cost and Usage Specification) CSV.

One row per org, model and day (the day in TIME_ZONE; ChargePeriodStart/End are that day's midnights in
UTC), in each currency the records were charged in. The rows are the records the ledger has charged:
`accounted` ones (a `usage` ledger transaction each, of the record's `amount`) and `skipped` ones
(nothing billable, so they add their tokens and no cost); a pending or failed record is not charged
yet, and appears in the export of its month once it is posted. So the file's BilledCost adds up to
the ledger's usage charges of the month, which a test holds.

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
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal

from django.conf import settings
from django.db.models import Count, Q, Sum
from django.db.models.functions import TruncDate

from core.money import quantize_money
from llmlog.csv_export import neutralise
from llmlog.exports.period import ExportPeriod
from llmlog.models import TOKEN_COUNT_FIELDS, AccountingStatus
from llmlog.queries import UsageQuery
from llmlog.selectors.records import usage_matching
from llmlog.selectors.sums import sum_of

# The records the ledger has charged (see the module's docstring).
CHARGED = (AccountingStatus.ACCOUNTED, AccountingStatus.SKIPPED)
# Grouped rows fetched per round trip: a month of a big gateway is orgs x models x days rows.
CHUNK_SIZE = 2000

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
    """The charged records of one org, model, provider and currency on one day."""

    day: date
    org: str
    model_name: str
    provider: str
    currency: str
    requests: int
    tokens: dict[str, int]
    total_tokens: int
    amount: Decimal


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
    groups = (
        usage_matching(query=query)
        .order_by()
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


def focus_row(group: FocusGroup, *, period: ExportPeriod, provider_name: str) -> dict[str, str]:
    """One FOCUS row (column -> text) for a group of usage."""
    start, end = period.day_bounds(group.day)
    # The gateway's text (org, model, provider) made inert for a spreadsheet; numbers are ours.
    org, model, provider, currency = (
        neutralise(text) for text in (group.org, group.model_name, group.provider, group.currency)
    )
    money = str(group.amount)
    tokens = str(group.total_tokens)
    row = {
        "BilledCost": money,
        "BillingAccountId": org,
        "BillingAccountName": org,
        "BillingCurrency": currency,
        "BillingPeriodEnd": utc_text(period.end),
        "BillingPeriodStart": utc_text(period.start),
        "ChargeCategory": "Usage",
        "ChargeClass": "",
        "ChargeDescription": neutralise(
            f"{group.model_name} usage on {group.day.isoformat()}: {group.requests} requests, {tokens} tokens"
        ),
        "ChargeFrequency": "Usage-Based",
        "ChargePeriodEnd": utc_text(end),
        "ChargePeriodStart": utc_text(start),
        "ConsumedQuantity": tokens,
        "ConsumedUnit": TOKENS,
        "ContractedCost": money,
        "EffectiveCost": money,
        "InvoiceIssuerName": provider_name,
        "ListCost": money,
        "PricingQuantity": tokens,
        "PricingUnit": TOKENS,
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
        "x_Requests": str(group.requests),
    }
    row.update({column: str(group.tokens[name]) for name, column in X_COLUMNS.items()})
    return row


def utc_text(moment: datetime) -> str:
    """ISO 8601 in UTC with Z, as FOCUS writes its date-times: 2026-11-01T00:00:00Z."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class _Echo:
    """A file whose write returns what it was given: csv.writer then formats one line at a time."""

    def write(self, value: str) -> str:
        return value


def focus_csv_lines(*, period: ExportPeriod, org: str = "", userorgid: str | None = None) -> Iterator[str]:
    """The FOCUS CSV of `period` (as focus_groups), line by line: the header, then the rows."""
    writer = csv.writer(_Echo(), lineterminator="\r\n")
    provider_name = settings.LLMLOG_FOCUS_PROVIDER_NAME
    yield writer.writerow(FOCUS_COLUMNS)
    for group in focus_groups(period=period, org=org, userorgid=userorgid):
        row = focus_row(group, period=period, provider_name=provider_name)
        yield writer.writerow([row[column] for column in FOCUS_COLUMNS])
