"""Prices a usage record from ModelPrice when the gateway sent no amount or cost.

Each disjoint part of the call is charged once at its own unit price: uncached input, cache reads,
cache writes, image input, output (reasoning at its own price when one is set), per request and per
web search. Unit prices are per 1M tokens. `apply_prices` prices the rows of ingest and of posting
(a record stored before its model had a price is priced again when it is posted).
"""

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from django.db import connection

from core.money import quantize_money
from llmlog.limits import MAX_MONEY
from llmlog.models import TOKEN_COUNT_FIELDS, AccountingStatus, ModelPrice

PER_MILLION = Decimal(1_000_000)


@dataclass(frozen=True)
class TokenCounts:
    input_tokens: int
    output_tokens: int
    cached_tokens: int = 0
    cache_creation_tokens: int = 0
    reasoning_tokens: int = 0
    image_input_tokens: int = 0
    web_search_count: int = 0


def charge(price: ModelPrice, usage: TokenCounts) -> Decimal:
    """What `usage` comes to at `price`, rounded to the money column's places."""
    uncached_input = (
        usage.input_tokens - usage.cached_tokens - usage.cache_creation_tokens - usage.image_input_tokens
    )
    plain_output = usage.output_tokens - usage.reasoning_tokens
    token_parts = (
        (uncached_input, price.input_price),
        (usage.cached_tokens, _or(price.cached_input_price, price.input_price)),
        (usage.cache_creation_tokens, _or(price.cache_creation_price, price.input_price)),
        (usage.image_input_tokens, _or(price.image_input_price, price.input_price)),
        (plain_output, price.output_price),
        (usage.reasoning_tokens, _or(price.reasoning_price, price.output_price)),
    )
    per_tokens = sum((Decimal(count) * unit for count, unit in token_parts if count), Decimal(0))
    total = per_tokens / PER_MILLION + price.request_price + usage.web_search_count * price.web_search_price
    return quantize_money(total)


def _or(value: Decimal | None, fallback: Decimal) -> Decimal:
    return fallback if value is None else value


def price_snapshot(price: ModelPrice) -> dict:
    """The unit prices applied, kept on the record so a later price change never rewrites history."""
    fields = (
        "input_price",
        "output_price",
        "cached_input_price",
        "cache_creation_price",
        "reasoning_price",
        "image_input_price",
        "request_price",
        "web_search_price",
    )
    snapshot = {name: _decimal_text(getattr(price, name)) for name in fields}
    snapshot.update(
        id=price.pk,
        currency=price.currency,
        effective_from=price.effective_from.isoformat(),
        unit="per 1M tokens",
    )
    return snapshot


def _decimal_text(value: Decimal | None) -> str | None:
    return None if value is None else str(value)


class PriceBook:
    """The prices of a set of models, loaded in one query, looked up by (model, kind, moment)."""

    def __init__(self, prices: Iterable[ModelPrice]) -> None:
        self._by_key: dict[tuple[str, str], list[ModelPrice]] = defaultdict(list)
        for price in sorted(prices, key=lambda p: p.effective_from, reverse=True):
            self._by_key[(price.model_name, price.kind)].append(price)

    @classmethod
    def for_models(cls, model_names: Iterable[str]) -> "PriceBook":
        names = sorted(set(model_names))
        if not names:
            return cls([])
        # Read by every ingest request. Manager.raw skips the ORM's query compiler, which cost more
        # than the read itself: 450 µs of CPU for filter(model_name__in=...), 200 µs this way
        # (BENCHMARKS.md, "single-record ingest, per-request CPU").
        table = connection.ops.quote_name(ModelPrice._meta.db_table)
        placeholders = ", ".join(["%s"] * len(names))
        sql = f"SELECT * FROM {table} WHERE model_name IN ({placeholders})"
        return cls(ModelPrice.objects.raw(sql, names))

    def find(self, model_name: str, kind: str, at: datetime) -> ModelPrice | None:
        """The price in effect at `at`: the newest one that started at or before it."""
        for price in self._by_key.get((model_name, kind), ()):
            if price.effective_from <= at:
                return price
        return None

    def owner(self, model_name: str, at: datetime) -> str:
        """The org that owns the model at `at`: the ownerid of its cost price in effect (the owner is who
        is paid the cost), else its sale price's; "" when neither names one."""
        for kind in (ModelPrice.Kind.COST, ModelPrice.Kind.SALE):
            price = self.find(model_name, kind, at)
            if price is not None and price.ownerid:
                return price.ownerid
        return ""


class ChargeTooLarge(ValueError):
    """A record's charge at a real price passes MAX_MONEY (absurd token counts): `field` (amount or
    cost) and `message` name the problem for the record's answer."""

    def __init__(self, *, field: str, price: ModelPrice) -> None:
        self.field = field
        self.message = (
            f"Priced at {price}, it comes to more than {MAX_MONEY}, the most one record may charge. "
            "Check the token counts."
        )
        super().__init__(f"{field}: {self.message}")


def apply_prices(rows: list[dict[str, Any]]) -> dict[int, dict[str, str]]:
    """Fill amount and cost from ModelPrice where the gateway sent none, the model's owner (`ownerid`)
    where it sent none, and decide what is billable. Used at ingest and again at posting, for records
    stored before their model had a price.

    Returns the field errors of rows whose charge passes MAX_MONEY, by position in `rows`; those rows
    are left unpriced.
    """
    errors: dict[int, dict[str, str]] = {}
    to_price = [(i, row) for i, row in enumerate(rows) if row["amount"] is None or row["cost"] is None]
    ownerless = [row for row in rows if not row["ownerid"]]
    book = PriceBook.for_models(
        [row["model_name"] for _, row in to_price] + [row["model_name"] for row in ownerless]
    )
    for row in ownerless:
        # An org key never states the owner; a platform key may leave it to the book too.
        row["ownerid"] = book.owner(row["model_name"], row["use_time"])
    for position, row in to_price:
        try:
            _price_row(row, book)
        except ChargeTooLarge as exc:
            errors[position] = {exc.field: exc.message}
    for row in rows:
        if row["amount"] == 0 and row["cost"] == 0:
            row["accounting_status"] = AccountingStatus.SKIPPED
    return errors


def _price_row(row: dict[str, Any], book: PriceBook) -> None:
    """Fill the row's missing amount and cost from the book; raise ChargeTooLarge, leaving it as it was."""
    if row["status"] == "failed":
        # A failed call is billed only when the gateway says so.
        row["amount"] = Decimal(0) if row["amount"] is None else row["amount"]
        row["cost"] = Decimal(0) if row["cost"] is None else row["cost"]
        return
    counts = TokenCounts(**{name: row[name] for name in TOKEN_COUNT_FIELDS})
    snapshot: dict[str, Any] = {}
    amount, cost = row["amount"], row["cost"]
    if amount is None:
        sale = book.find(row["model_name"], "sale", row["use_time"])
        if sale is not None:
            amount = _bounded_charge(sale, counts, "amount")
            snapshot["sale"] = price_snapshot(sale)
    if cost is None:
        cost_price = book.find(row["model_name"], "cost", row["use_time"])
        # No cost price: the model costs nothing to serve (the platform's own model).
        cost = _bounded_charge(cost_price, counts, "cost") if cost_price is not None else Decimal(0)
        snapshot["cost"] = price_snapshot(cost_price) if cost_price is not None else None
    row["amount"], row["cost"], row["price"] = amount, cost, snapshot


def _bounded_charge(price: ModelPrice, counts: TokenCounts, field: str) -> Decimal:
    """`charge`, refused past MAX_MONEY (absurd token counts at a real price)."""
    try:
        value = charge(price, counts)
    except InvalidOperation:  # more digits than the decimal context holds
        value = None
    if value is None or value > MAX_MONEY:
        raise ChargeTooLarge(field=field, price=price)
    return value
