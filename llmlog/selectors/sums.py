"""Sums of usage: of rows and of hourly buckets, and how they add up (int tokens, Decimal money)."""

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from django.db import connection
from django.db.models import Count, FloatField, QuerySet, Sum
from django.db.models.functions import Cast

from llmlog.models import TOKEN_COUNT_FIELDS
from llmlog.replicas import replica_read

TOKEN_FIELDS = (*TOKEN_COUNT_FIELDS, "total_tokens")
MONEY_FIELDS = ("amount", "cost")


def empty_totals() -> dict[str, Any]:
    return {"requests": 0, **dict.fromkeys(TOKEN_FIELDS, 0), "amount": Decimal(0), "cost": Decimal(0)}


def row_sums() -> dict[str, Any]:
    """The aggregates of usage rows: one request each."""
    return {"requests": Count("id"), **{name: sum_of(name) for name in TOKEN_FIELDS + MONEY_FIELDS}}


def rollup_sums() -> dict[str, Any]:
    """The aggregates of buckets: each already counts its requests."""
    return {name: sum_of(name) for name in ("requests", *TOKEN_FIELDS, *MONEY_FIELDS)}


def sum_of(name: str) -> Sum:
    """SUM of a column that cannot overflow. PostgreSQL adds integers as numeric; SQLite's SUM raises
    past 2^63 (rows stored before ingest bounded their counts can get there), so there counts add as
    REAL, exact up to 2^53, far past any real total. Money adds as it is on both."""
    if connection.vendor == "sqlite" and name not in MONEY_FIELDS:
        return Sum(Cast(name, FloatField()))
    return Sum(name)


def add_sums(into: dict[str, Any], values: Mapping[str, Any]) -> dict[str, Any]:
    """Add one group's sums (None: nothing) into `into`; returns it."""
    for name in ("requests", *TOKEN_FIELDS):
        into[name] += int(values.get(name) or 0)
    for name in MONEY_FIELDS:
        into[name] += values.get(name) or 0
    return into


@replica_read
def usage_totals(*, queryset: QuerySet) -> dict[str, Any]:
    """Sums over `queryset` (usage rows): {requests, input_tokens, output_tokens, cached_tokens,
    cache_creation_tokens, reasoning_tokens, image_input_tokens, web_search_count, total_tokens: int,
    amount, cost: Decimal}. Unpriced records (amount or cost NULL) add 0."""
    return add_sums(empty_totals(), queryset.order_by().aggregate(**row_sums()))
