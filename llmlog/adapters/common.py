"""What both adapters share: validating a mapped record, the amount rule, and ingest in batches.

Who may state money, in a gateway's terms. The cost a gateway *reports* (LiteLLM's `response_cost`, an
OTLP span's `gen_ai.cost.total_cost`) is the provider's price as the gateway computed it, not a charge
an org states to us: it is stored as the record's `provider_cost`, whoever sent it (`settle_gateway_money`,
the one place of this rule). `cost` comes from the price book when the model has a cost price in effect;
from a platform key only, a model without one takes the reported cost as its `cost`, and a model without
a sale price is charged that cost as its `amount`. An org key's record is priced from the book like any
org key's, its reported cost changing nothing but `provider_cost`. An explicit `amount`, `cost`,
`ownerid` or `price` (LiteLLM: top-level fields; OTLP: the `llmlog.amount`, `llmlog.cost`,
`llmlog.ownerid` attributes) is a statement, taken from a platform key only: an org key that sends one is
refused whole with a 403.
"""

import hashlib
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import msgspec
from django.conf import settings

from llmlog.ingest.service import IngestResult, usage_ingest_records
from llmlog.ingest.stated import PLATFORM_ONLY_FIELDS, money_text_problem, refuse_stated_by_org
from llmlog.ingest.wire import RecordError, UsageIn, validation_errors
from llmlog.models import ModelPrice
from llmlog.pricing import PriceBook

SHA256_HEX = re.compile(r"[0-9a-f]{64}")  # fullmatch: $ would also match before a final newline


class GatewayUsageIn(UsageIn, forbid_unknown_fields=True, omit_defaults=True):
    """A native record mapped from a gateway's format; the cost the gateway reported is its
    `provider_cost` (not a statement of money: see the module's docstring)."""


class MappingError(RecordError):
    """A gateway record that could not be mapped; `stated` names the platform-only fields it sent,
    so an org key's request is refused whole even when the record itself is malformed."""

    def __init__(self, errors: dict[str, str], stated: list[str] | tuple[str, ...] = ()) -> None:
        super().__init__(errors)
        self.stated = list(stated)


Mapped = GatewayUsageIn | RecordError


def usage_in(fields: dict[str, Any], *, source_names: Mapping[str, str]) -> GatewayUsageIn:
    """The native record from an adapter's mapped fields, checked exactly as a posted record is.

    A Struct built in Python skips msgspec's constraints (lengths, patterns, ranges); converting checks
    them, so a value too long for its column is a RecordError here, never a database error later.
    Errors are named by the gateway's own field (`source_names`), which is what its operator can fix.
    """
    try:
        return msgspec.convert({k: v for k, v in fields.items() if v is not None}, type=GatewayUsageIn)
    except msgspec.ValidationError as exc:
        raise RecordError(rename_errors(validation_errors(str(exc)), source_names)) from None


def rename_errors(errors: dict[str, str], source_names: Mapping[str, str]) -> dict[str, str]:
    """{"usages.prompt_tokens": ...} -> {"metadata.usage_object.prompt_tokens": ...} for LiteLLM."""
    renamed = {}
    for name, message in errors.items():
        head, dot, rest = name.partition(".")
        renamed[source_names.get(head, head) + dot + rest] = message
    return renamed


def clip(value: Any, length: int) -> Any:
    """A label cut to its column: losing the tail of an alias beats losing the record."""
    return value[:length] if isinstance(value, str) else value


def key_hash(value: str | None) -> str | None:
    """LiteLLM logs the sha256 of its virtual key; anything else is hashed here, never kept as sent."""
    if not value:
        return None
    return value if SHA256_HEX.fullmatch(value) else hashlib.sha256(value.encode()).hexdigest()


def epoch_seconds(value: float) -> datetime:
    return datetime.fromtimestamp(value, tz=UTC)


def money_from_json(raw: msgspec.Raw, name: str, errors: dict[str, str]) -> Decimal | None:
    """A money value of a gateway's record as sent (a JSON string or number), under the native rule:
    a string is ASCII digits with at most one point, a number is never signed. None when absent/null."""
    if bytes(raw) in (b"", b"null"):
        return None
    problem = money_text_problem(bytes(raw))
    if problem is None:
        try:
            return msgspec.json.decode(raw, type=Decimal)
        except (msgspec.ValidationError, msgspec.DecodeError):
            problem = "Expected a decimal number or string."
    errors[name] = problem
    return None


def settle_gateway_money(records: list[Mapped], *, org: str) -> None:
    """What a platform key's gateway left unstated and the price book cannot give, from the cost the
    gateway reported (`provider_cost`): `cost` when the model has no cost price in effect, and `amount`
    when it has no sale price (charged at cost: the stated or settled cost, else the reported one).

    An org key's records are left to the price book (`provider_cost` is kept as reported). Records with
    neither a cost nor a reported cost keep what they have: ingest prices them, or leaves them to fail
    with no_price.
    """
    if org:
        return
    candidates = [
        record
        for record in records
        if isinstance(record, UsageIn)
        and (record.cost is None or record.amount is None)
        and (record.cost is not None or record.provider_cost is not None)
    ]
    if not candidates:
        return
    book = PriceBook.for_models(record.model_name for record in candidates)
    for record in candidates:
        at = record.use_time if isinstance(record.use_time, datetime) else datetime.now(tz=UTC)
        if record.cost is None and book.find(record.model_name, ModelPrice.Kind.COST, at) is None:
            record.cost = record.provider_cost
        if record.amount is None and book.find(record.model_name, ModelPrice.Kind.SALE, at) is None:
            record.amount = record.cost if record.cost is not None else record.provider_cost


def stated_by(records: list[Mapped]) -> list[str]:
    """The platform-only fields the records state (mapped or not)."""
    names = []
    for record in records:
        if isinstance(record, MappingError):
            names.extend(record.stated)
        elif isinstance(record, UsageIn):
            names.extend(name for name in PLATFORM_ONLY_FIELDS if getattr(record, name) not in (None, ""))
    return names


def ingest_gateway_records(
    *, records: list[Mapped], org: str, source_names: Mapping[str, str]
) -> IngestResult:
    """Store mapped records through the native ingest, in batches of LLMLOG_BULK_MAX.

    A gateway's batch may be bigger than a native bulk request (LiteLLM's batch size is the operator's
    choice, and it drops a refused batch): it is never refused for its count, only for its bytes.
    Each batch is its own transaction; a resent batch is idempotent on transno, so a failure between
    batches loses nothing on retry.
    """
    # Every record is checked before the first batch is written: an org key's statement stores nothing.
    if org:  # a platform key may state anything: its records are not read for it
        refuse_stated_by_org(org=org, stated=stated_by(records))
    settle_gateway_money(records, org=org)
    size = settings.LLMLOG_BULK_MAX
    merged = IngestResult(is_bulk=True)
    for start in range(0, len(records), size):
        part = usage_ingest_records(records=records[start : start + size], org=org, is_bulk=True)
        for item in part.items:
            # Errors of a record that was mapped come from the native rules, in native names; a record
            # that could not be mapped already names the gateway's fields.
            if item.errors and isinstance(records[start + item.index], UsageIn):
                item.errors = rename_errors(item.errors, source_names)
            item.index += start
            item.row = None  # the answer lists ids, not rows: keep a 512-record answer small
            merged.items.append(item)
    return merged


# Item errors an answer lists: a client fixes the first ones and resends; a 10,000-record batch of bad
# records would otherwise answer megabytes of the same message.
ERRORS_LISTED = 100


def summary(result: IngestResult) -> dict[str, Any]:
    """A bulk answer's body (native and LiteLLM): counts, then each item's outcome, where only the first
    ERRORS_LISTED items in error or conflict are listed; `errors_not_listed` counts the rest."""
    items, listed, not_listed = [], 0, 0
    for item in result.items:
        if item.status in ("error", "conflict"):
            if listed == ERRORS_LISTED:
                not_listed += 1
                continue
            listed += 1
        items.append(item.as_dict())
    return {
        "received": len(result.items),
        "created": result.count("created"),
        "duplicates": result.count("duplicate"),
        "conflicts": result.count("conflict"),
        "errors": result.count("error"),
        "errors_not_listed": not_listed,
        "items": items,
    }


def to_decimal(value: Decimal | float | None) -> Decimal | None:
    if value is None:
        return None
    return value if isinstance(value, Decimal) else Decimal(repr(value))
