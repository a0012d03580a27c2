"""Ingest: the gateway's records in, validated, priced, stored once.

The hot path stays out of DRF's serializers (an order of magnitude too slow for 1000-record batches,
see ECOSYSTEM.md): msgspec decodes and type-checks each item, plain functions apply the design's rules,
and on PostgreSQL the rows go in with COPY. Idempotency is the unique constraint on (`transno`,
`userorgid`): within an org, a resend whose payload hash matches is a duplicate, anything else under a
known transno is a conflict; another org's same transno is simply another record.

Who may state money: `amount`, `cost`, `ownerid` and `price` are taken from a platform key only (the
gateway's own prices). An org key that sends one is refused whole (StatedByOrgKey, a 403): its records
are priced from the price book, which also names the model's owner.
"""

import functools
import hashlib
import ipaddress
import math
import re
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from decimal import Decimal
from typing import Annotated, Any, Literal

import msgspec
from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.db import IntegrityError, connection, transaction
from django.db.models import CharField
from django.utils import timezone
from psycopg.types.json import Jsonb
from uuid_utils.compat import uuid7

from llmlog.bodies import check_containers, json_array_items, json_error
from llmlog.db import bound_cursor
from llmlog.limits import MAX_MONEY, MAX_TOKENS, MAX_TOTAL_TOKENS, MAX_WEB_SEARCHES
from llmlog.metrics import count_ingest
from llmlog.models import (
    TOKEN_COUNT_FIELDS,
    AccountingStatus,
    LLMUsage,
    LLMUsageHistory,
    UsageAll,
)
from llmlog.pricing import TokenCounts, apply_prices, quantize_money
from llmlog.tasks import request_posting_soon

Tokens = Annotated[int, msgspec.Meta(ge=0, le=MAX_TOKENS)] | None
# The fields only a platform key may send (llmlog.api.auth.Caller.is_platform).
PLATFORM_ONLY_FIELDS = ("amount", "cost", "ownerid", "price")
# A money value as text: ASCII digits with at most one point. No sign (not even "-0"), exponent, spaces,
# underscores or other scripts' digits, all of which Decimal() would otherwise read. Used with fullmatch.
MONEY_TEXT = re.compile(r"[0-9]+(?:\.[0-9]*)?|\.[0-9]+")
# Levels of arrays/objects inside metadata, usages or an ioinfo side. Tags and usage objects are flat;
# the bound keeps a hostile body from costing the database (jsonb) and every later reader
# (json.dumps recurses) a deep recursion.
MAX_JSON_DEPTH = 64
# A provider's raw usage object is a few hundred bytes; this bounds what a hostile one can store.
USAGES_MAX_BYTES = 8192
# use_time bounds: nothing billed by an LLM gateway predates 2000, and a day ahead covers any gateway's
# clock skew; outside them the time is a bug (seconds sent as milliseconds, a zero date), not a record.
USE_TIME_MIN = datetime(2000, 1, 1, tzinfo=UTC)
USE_TIME_MAX_AHEAD = timedelta(days=1)
NUL_MESSAGE = "Contains a NUL character (\\u0000), which cannot be stored."
# Durations: 10**9 s (31 years) bounds the columns' floats to something a client can read back.
Seconds = Annotated[float, msgspec.Meta(ge=0, le=1e9)] | None


def Text(max_length: int) -> Any:  # noqa: N802 - reads as a type in the struct below
    return Annotated[str, msgspec.Meta(max_length=max_length)]


class IoInfoIn(msgspec.Struct, forbid_unknown_fields=True):
    request: Any = None
    response: Any = None


class UsageIn(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """One record as a gateway sends it. Server-owned fields (id, use_date, accounting) are not accepted."""

    model_name: Annotated[str, msgspec.Meta(min_length=1, max_length=150)]
    transno: Annotated[str, msgspec.Meta(min_length=1, max_length=128)] | None = None
    taskid: Text(256) = ""
    use_time: datetime | int | float | None = None
    responsed_seconds: Seconds = None
    finish_seconds: Seconds = None
    userid: Text(64) = ""
    username: Text(150) = ""
    userorgid: Text(64) = ""
    token_id: Text(64) = ""
    token_name: Text(150) = ""
    token_key: Text(512) | None = None
    # \A...\Z, never ^...$: msgspec searches the pattern, and $ also matches before a final newline.
    token_key_hash: Annotated[str, msgspec.Meta(pattern=r"\A[0-9a-f]{64}\Z")] | None = None
    group: Text(64) = ""
    request_ip: Text(64) | None = None
    feature: Text(64) = ""
    llmid: Text(64) = ""
    ownerid: Text(64) = ""
    provider: Text(64) = ""
    provider_type: Text(32) = ""
    channel_id: Text(64) = ""
    is_local: bool = False
    is_global_provider: bool = False
    endpoint: Text(255) = ""
    is_stream: bool = False
    input_tokens: Tokens = None
    output_tokens: Tokens = None
    cached_tokens: Tokens = None
    cache_creation_tokens: Tokens = None
    reasoning_tokens: Tokens = None
    image_input_tokens: Tokens = None
    web_search_count: Annotated[int, msgspec.Meta(ge=0, le=MAX_WEB_SEARCHES)] | None = None
    total_tokens: Annotated[int, msgspec.Meta(ge=0, le=MAX_TOTAL_TOKENS)] | None = None
    usages: dict[str, Any] | None = None
    amount: Decimal | None = None
    cost: Decimal | None = None
    currency: Annotated[str, msgspec.Meta(pattern=r"\A[A-Z]{3}\Z")] = "USD"
    status: Literal["success", "failed"] = "success"
    code: Annotated[int, msgspec.Meta(ge=100, le=599)] | None = None
    error_message: Text(65536) = ""
    retry_times: Annotated[int, msgspec.Meta(ge=0, le=2**31 - 1)] = 0
    ioinfo: IoInfoIn | None = None
    metadata: dict[str, Any] | None = None
    price: dict[str, Any] | None = None  # the unit prices the gateway applied (a platform key only)


NOT_SENT = msgspec.Raw(b"")


class StatedFields(msgspec.Struct):
    """The platform-only fields of a record as sent, read before the record itself: an org key that
    states one is refused before anything is stored, and money is checked as the text it was sent as
    (Decimal would read "1e3", " 1", "1_0" and Arabic-Indic digits alike)."""

    # msgspec.Raw takes no union (`Raw | None` would refuse every value but null): absent is NOT_SENT.
    amount: msgspec.Raw = NOT_SENT
    cost: msgspec.Raw = NOT_SENT
    ownerid: msgspec.Raw = NOT_SENT
    price: msgspec.Raw = NOT_SENT

    def sent(self, name: str) -> bytes | None:
        """The field's JSON text; None when absent or null (which means absent)."""
        text = bytes(getattr(self, name))
        return None if text in (b"", b"null") else text

    def stated(self) -> list[str]:
        return [name for name in PLATFORM_ONLY_FIELDS if self.sent(name) is not None]


class StatedByOrgKey(PermissionDenied):
    """An org key sent amount, cost, ownerid or price: the whole request is refused (a 403)."""

    def __init__(self, fields: list[str]) -> None:
        names = ", ".join(fields)
        super().__init__(
            f"Only a platform key may state {names}: an org key's records are priced from the price "
            "book, which also names the model's owner. Send the record without "
            f"{'it' if len(fields) == 1 else 'them'}."
        )
        self.fields = fields


def refuse_stated_by_org(*, org: str, stated: list[str]) -> None:
    """Raise StatedByOrgKey when an org key (org != "") stated any platform-only field."""
    if org and stated:
        raise StatedByOrgKey(sorted(set(stated), key=PLATFORM_ONLY_FIELDS.index))


def money_text_problem(raw: bytes) -> str | None:
    """Why a JSON money value, as sent, is not one: a string must be ASCII digits with at most one point;
    a number is read as JSON defines it (an exponent is how JSON libraries write 0.00001), never signed.
    None when it is fine, or not a string or number at all (the record's own decoding names that)."""
    if raw[:1] == b'"':
        try:
            text = msgspec.json.decode(raw, type=str)
        except (msgspec.DecodeError, msgspec.ValidationError):
            return "Expected a decimal string."
        if MONEY_TEXT.fullmatch(text) is None:
            return (
                "Expected ASCII digits with at most one decimal point (no sign, exponent, spaces, "
                f"underscores or other digits), got {text[:40]!r}."
            )
    elif raw[:1] == b"-":
        return "Expected a non-negative amount, without a sign (not even -0)."
    return None


def stated_fields(raw: bytes) -> StatedFields | None:
    """The platform-only fields of a raw record; None when it is not a JSON object (decoding the record
    then says why). Any object is read, whatever its fields hold: the check cannot be skipped."""
    try:
        return msgspec.json.decode(raw, type=StatedFields)
    except (msgspec.DecodeError, RecursionError, UnicodeDecodeError):  # ValidationError is a DecodeError
        return None


# Every text field of the record, checked for NUL (PostgreSQL's text refuses it).
TEXT_FIELDS = tuple(
    f.name
    for f in msgspec.inspect.type_info(UsageIn).fields
    if any(isinstance(kind, msgspec.inspect.StrType) for kind in getattr(f.type, "types", (f.type,)))
)


class RecordError(Exception):
    """A record that breaks a rule; `errors` maps each field to what is wrong with it."""

    def __init__(self, errors: dict[str, str]) -> None:
        super().__init__("; ".join(f"{name}: {message}" for name, message in errors.items()))
        self.errors = errors


class BodyError(Exception):
    """The request as a whole cannot be read (malformed JSON, too many records)."""


@dataclass
class ItemResult:
    index: int
    status: Literal["created", "duplicate", "conflict", "error"]
    transno: str | None = None
    id: str | None = None
    errors: dict[str, str] | None = None
    row: dict[str, Any] | None = field(default=None, repr=False)  # the stored columns, when created

    def as_dict(self) -> dict[str, Any]:
        return {key: value for key, value in self.__dict__.items() if value is not None and key != "row"}


@dataclass
class IngestResult:
    is_bulk: bool
    items: list[ItemResult] = field(default_factory=list)

    def count(self, status: str) -> int:
        return sum(1 for item in self.items if item.status == status)


# --- parsing --------------------------------------------------------------------------------------


def parse_body(body: bytes) -> tuple[list[msgspec.Raw], bool]:
    """Split a request body into raw items: one JSON object, or a list of at most LLMLOG_BULK_MAX.

    The records are counted while the list is split (llmlog.bodies): past the cap, and past the JSON
    objects and arrays that many records can need, llmlog.bodies.TooBig, before anything is decoded.
    """
    stripped = body.lstrip()
    if not stripped:
        raise BodyError("The request body is empty: send a JSON object or a list of objects.")
    is_bulk = stripped[:1] == b"["
    limit = settings.LLMLOG_BULK_MAX
    try:
        if is_bulk:
            items = json_array_items(body, limit=limit, setting="LLMLOG_BULK_MAX")
        else:
            items = [msgspec.json.decode(body, type=msgspec.Raw)]
    except msgspec.DecodeError as exc:
        raise BodyError(json_error(exc)) from None
    except RecursionError:
        raise BodyError("Malformed JSON: nested too deeply to read.") from None
    check_containers(body, records=limit)  # the split allocates a Raw per item; decoding, per container
    if is_bulk and not items:
        raise BodyError("The list of records is empty.")
    return items, is_bulk


def decode_record(raw: bytes) -> UsageIn:
    try:
        return msgspec.json.decode(raw, type=UsageIn)
    except msgspec.ValidationError as exc:
        raise RecordError(_validation_errors(str(exc))) from None
    except (msgspec.DecodeError, RecursionError, UnicodeDecodeError) as exc:
        # Strings are UTF-8-checked and nesting is followed only here (splitting the body skips them).
        raise RecordError(_undecodable(raw, exc)) from None


def _undecodable(raw: bytes, exc: Exception) -> dict[str, str]:
    """Name the top-level field that cannot be decoded, when the object itself can be split."""
    if isinstance(exc, RecursionError):
        message = "Nested too deeply to read."
    elif isinstance(exc, UnicodeDecodeError):
        message = "Not valid UTF-8."
    else:
        message = f"Malformed JSON: {exc}"
    try:
        fields = msgspec.json.decode(raw, type=dict[str, msgspec.Raw])
        for name, value in fields.items():
            try:
                msgspec.json.decode(value)
            except (msgspec.DecodeError, RecursionError, UnicodeDecodeError):
                return {name: message}
    except (msgspec.DecodeError, RecursionError, UnicodeDecodeError):
        pass
    return {"non_field_errors": message}


def _validation_errors(message: str) -> dict[str, str]:
    """msgspec says 'Expected `int` >= 0 - at `$.input_tokens`': key the message by the field."""
    text, _, where = message.partition(" - at `$")
    if where:
        name = where.rstrip("`").lstrip(".") or "non_field_errors"
        return {name: text}
    if text.startswith("Object contains unknown field"):
        name = text.split("`")[1]
        return {name: "Unknown field."}
    if text.startswith("Object missing required field"):
        name = text.split("`")[1]
        return {name: "This field is required."}
    return {"non_field_errors": text}


# --- the rules ------------------------------------------------------------------------------------


@dataclass
class PreparedRecord:
    row: dict[str, Any]
    payload_hash: str


def payload_hash(record: UsageIn) -> str:
    """A stable digest of the record as sent (key order ignored, the raw gateway key never included)."""
    return hashlib.sha256(msgspec.json.encode(record, order="sorted")).hexdigest()


def prepare_record(
    record: UsageIn, *, now: datetime, org: str = "", tz: tzinfo | None = None
) -> PreparedRecord:
    """Apply the design's rules to a decoded record; raise RecordError naming every bad field.

    `tz` is TIME_ZONE, the day boundary of use_date (looked up once per batch by the caller: it is slow).
    """
    errors: dict[str, str] = {}
    if record.token_key is not None:
        record.token_key_hash = hashlib.sha256(record.token_key.encode()).hexdigest()
        record.token_key = None
    if org:
        if record.userorgid and record.userorgid != org:
            errors["userorgid"] = f"This key may only ingest records of org {org!r}."
        record.userorgid = org

    use_time = _use_time(record.use_time, errors, now=now)
    tokens = _token_counts(record, errors)
    amount = _money(record.amount, "amount", errors)
    cost = _money(record.cost, "cost", errors)
    if record.price is not None:
        _check_json(record.price, "price", USAGES_MAX_BYTES, errors)
    request_ip = _ip(record.request_ip, errors)
    for name in TEXT_FIELDS:
        value = getattr(record, name)
        if value is not None and "\x00" in value:
            errors[name] = NUL_MESSAGE
    metadata = record.metadata or {}
    _check_json(metadata, "metadata", settings.LLMLOG_METADATA_MAX_BYTES, errors)
    if record.usages is not None:
        _check_json(record.usages, "usages", USAGES_MAX_BYTES, errors)
    if errors:
        raise RecordError(errors)

    digest = payload_hash(record)
    row = {
        "id": uuid7(),
        "transno": record.transno or uuid7().hex,
        "taskid": record.taskid,
        "use_date": use_time.astimezone(tz or timezone.get_current_timezone()).date(),
        "use_time": use_time,
        "responsed_seconds": record.responsed_seconds,
        "finish_seconds": record.finish_seconds,
        "created_at": now,
        "userid": record.userid,
        "username": record.username,
        "userorgid": record.userorgid,
        "token_id": record.token_id,
        "token_name": record.token_name,
        "token_key_hash": record.token_key_hash or "",
        "group": record.group,
        "request_ip": request_ip,
        "feature": record.feature,
        "llmid": record.llmid,
        "model_name": record.model_name,
        "ownerid": record.ownerid,
        "provider": record.provider,
        "provider_type": record.provider_type,
        "channel_id": record.channel_id,
        "is_local": record.is_local,
        "is_global_provider": record.is_global_provider,
        "endpoint": record.endpoint,
        "is_stream": record.is_stream,
        **tokens.__dict__,
        "total_tokens": tokens.input_tokens + tokens.output_tokens,
        "usages": record.usages,
        "amount": amount,
        "cost": cost,
        "currency": record.currency,
        "price": record.price,
        "status": record.status,
        "code": record.code,
        "error_message": record.error_message,
        "retry_times": record.retry_times,
        "ioinfo": truncate_ioinfo(record.ioinfo, settings.LLMLOG_IO_LIMIT),
        "accounting_status": AccountingStatus.PENDING,
        "accounted_at": None,
        "metadata": metadata,
        "payload_hash": digest,
    }
    return PreparedRecord(row=row, payload_hash=digest)


def _use_time(value: datetime | int | float | None, errors: dict[str, str], *, now: datetime) -> datetime:
    if value is None:
        return timezone.now()
    if isinstance(value, datetime):
        # A time without an offset is read in TIME_ZONE, the gateway's and the operator's day.
        aware = timezone.make_aware(value) if timezone.is_naive(value) else value
    elif not math.isfinite(value) or value < 0:
        errors["use_time"] = "Expected an ISO 8601 time or unix seconds/milliseconds."
        return timezone.now()
    else:
        seconds = value / 1000 if value >= 100_000_000_000 else value  # past 5138 AD in seconds: ms
        try:
            aware = datetime.fromtimestamp(seconds, tz=UTC)
        except (OverflowError, OSError, ValueError):
            errors["use_time"] = "Out of range."
            return timezone.now()
    try:
        in_utc = aware.astimezone(UTC)  # 9999-12-31T23:59-05:00 is past the largest datetime in UTC
    except OverflowError:
        in_utc = None
    if in_utc is None or not USE_TIME_MIN <= in_utc <= now + USE_TIME_MAX_AHEAD:
        errors["use_time"] = f"Expected a time from {USE_TIME_MIN:%Y-%m-%d} to one day from now."
        return timezone.now()
    return aware


def _money(value: Decimal | None, name: str, errors: dict[str, str]) -> Decimal | None:
    if value is None:
        return None
    if not value.is_finite() or value.is_signed():  # is_signed: -0 too
        errors[name] = "Expected a finite, non-negative amount."
        return None
    if value > MAX_MONEY:
        errors[name] = f"At most {MAX_MONEY} per record (llmlog.limits.MAX_MONEY)."
        return None
    # Below MAX_MONEY, five places make at most 12 significant digits: exact in the Decimal(18, 5)
    # column, and in a double too (SQLite's storage of a decimal column).
    return quantize_money(value)


def _ip(value: str | None, errors: dict[str, str]) -> str | None:
    if not value:
        return None
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        errors["request_ip"] = f"{value!r} is not an IPv4 or IPv6 address."
        return None
    if getattr(address, "scope_id", None):  # fe80::1%eth0: the database's inet has no zone index
        errors["request_ip"] = f"{value!r} has a zone index (%...); send the address alone."
        return None
    return str(address)


def _check_json(value: Any, name: str, max_bytes: int, errors: dict[str, str]) -> None:
    encoded = msgspec.json.encode(value)
    if len(encoded) > max_bytes:
        errors[name] = f"At most {max_bytes} bytes of JSON."
        return
    problem = json_problem(value, encoded=encoded)
    if problem:
        errors[name] = problem


def json_problem(value: Any, *, encoded: bytes | None = None) -> str | None:
    """Why a decoded JSON value cannot be stored as sent: nested more than MAX_JSON_DEPTH levels, or a
    NUL character (PostgreSQL's text and jsonb refuse it). None when it can be. `encoded` is the value
    as msgspec encodes it, when the caller has it already.

    The JSON text is searched first, and the value walked only when the text leaves a doubt: the depth
    when there are more brackets than the limit, the strings when `\\u0000` (how JSON escapes a NUL)
    appears, which may also be an escaped backslash before "u0000". Walking every string of a LiteLLM
    payload cost a fifth of its ingest.
    """
    if encoded is None:
        encoded = msgspec.json.encode(value)
    # Fewer brackets in all than the limit (those inside strings count too): it cannot be that deep.
    brackets = encoded.count(b"[") + encoded.count(b"{")
    if brackets > MAX_JSON_DEPTH and _nested_deeper_than(MAX_JSON_DEPTH, value):
        return f"Nested more than {MAX_JSON_DEPTH} levels deep."
    if b"\\u0000" in encoded and _has_nul(value):
        return NUL_MESSAGE
    return None


def _nested_deeper_than(limit: int, value: Any) -> bool:
    """Whether `value`, at depth 1, is or holds a container deeper than `limit`."""
    if not isinstance(value, dict | list):
        return False
    if limit < 1:
        return True
    for child in value.values() if isinstance(value, dict) else value:
        if isinstance(child, dict | list) and _nested_deeper_than(limit - 1, child):
            return True
    return False


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any((isinstance(key, str) and "\x00" in key) or _has_nul(item) for key, item in value.items())
    if isinstance(value, list):
        return any(_has_nul(item) for item in value)
    return False


def _token_counts(record: UsageIn, errors: dict[str, str]) -> TokenCounts:
    """The record's counts, filling what it left out from its raw `usages`, checked against the convention."""
    derived = usage_counts_from_raw(record.usages, errors) if record.usages else {}
    counts = {}
    for name in TOKEN_COUNT_FIELDS:
        sent = getattr(record, name)
        counts[name] = sent if sent is not None else derived.get(name, 0)
        limit = MAX_WEB_SEARCHES if name == "web_search_count" else MAX_TOKENS
        if counts[name] > limit:  # derived sums (Anthropic's input + cache) can pass the bound
            errors[name] = f"{counts[name]} is more than {limit}, the most this count can be."
    tokens = TokenCounts(**counts)
    prompt_parts = tokens.cached_tokens + tokens.cache_creation_tokens + tokens.image_input_tokens
    if prompt_parts > tokens.input_tokens:
        errors["cached_tokens"] = (
            f"cached_tokens + cache_creation_tokens + image_input_tokens ({prompt_parts}) "
            f"exceed input_tokens ({tokens.input_tokens}): they are parts of it."
        )
    if tokens.reasoning_tokens > tokens.output_tokens:
        errors["reasoning_tokens"] = (
            f"reasoning_tokens ({tokens.reasoning_tokens}) exceed output_tokens ({tokens.output_tokens}): "
            "they are part of it."
        )
    expected_total = tokens.input_tokens + tokens.output_tokens
    if record.total_tokens is not None and record.total_tokens != expected_total:
        errors["total_tokens"] = (
            f"total_tokens ({record.total_tokens}) must equal "
            f"input_tokens + output_tokens ({expected_total})."
        )
    return tokens


def usage_counts_from_raw(usages: dict[str, Any], errors: dict[str, str]) -> dict[str, int]:
    """Token counts from a provider's raw usage object, OpenAI's or Anthropic's shape."""

    def number(path: str) -> int:
        value: Any = usages
        for part in path.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        if value is None:
            return 0
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_TOKENS:
            errors[f"usages.{path}"] = f"Expected a non-negative integer of at most {MAX_TOKENS}."
            return 0
        return value

    if "prompt_tokens" in usages or "completion_tokens" in usages:  # OpenAI chat completions
        return {
            "input_tokens": number("prompt_tokens"),
            "output_tokens": number("completion_tokens"),
            "cached_tokens": number("prompt_tokens_details.cached_tokens"),
            "image_input_tokens": number("prompt_tokens_details.image_tokens"),
            "reasoning_tokens": number("completion_tokens_details.reasoning_tokens"),
        }
    if (
        "cache_read_input_tokens" in usages
        or "cache_creation_input_tokens" in usages
        or "server_tool_use" in usages
    ):
        # Anthropic: input_tokens excludes the cache reads and writes.
        cached = number("cache_read_input_tokens")
        creation = number("cache_creation_input_tokens")
        return {
            "input_tokens": number("input_tokens") + cached + creation,
            "output_tokens": number("output_tokens"),
            "cached_tokens": cached,
            "cache_creation_tokens": creation,
            "web_search_count": number("server_tool_use.web_search_requests"),
        }
    # OpenAI responses API (input_tokens includes the cached ones), or a plain {input, output} pair.
    return {
        "input_tokens": number("input_tokens"),
        "output_tokens": number("output_tokens"),
        "cached_tokens": number("input_tokens_details.cached_tokens"),
        "reasoning_tokens": number("output_tokens_details.reasoning_tokens"),
    }


def truncate_ioinfo(ioinfo: IoInfoIn | None, limit: int) -> dict[str, Any] | None:
    """Keep at most `limit` characters of each side; a side that is not text is kept as JSON text."""
    if ioinfo is None:
        return None
    result: dict[str, Any] = {"truncated": False}
    for side in ("request", "response"):
        value = getattr(ioinfo, side)
        if value is None:
            result[side] = None
            continue
        encoded = None if isinstance(value, str) else msgspec.json.encode(value)
        text = value if encoded is None else encoded.decode()
        if len(text) > limit:
            value = text[:limit]
            result["truncated"] = True
        elif encoded is not None and json_problem(value, encoded=encoded):
            # Too deep, or a NUL the database refuses: kept as its JSON text (NUL escaped), like a side
            # too long. ioinfo is a copy kept for reading; the billable record is never refused for it.
            value = text
        result[side] = value.replace("\x00", "\ufffd") if isinstance(value, str) else value
    return result


# --- storage --------------------------------------------------------------------------------------

# Every column ingest writes: all but `seq`, which the database numbers (its default, migration 0008).
USAGE_FIELDS = tuple(f for f in LLMUsage._meta.concrete_fields if f.attname != "seq")
JSON_COLUMNS = frozenset(f.attname for f in USAGE_FIELDS if f.get_internal_type() == "JSONField")


def write_usage_rows(rows: list[dict[str, Any]]) -> None:
    """Insert prepared rows into llmusage: COPY on PostgreSQL, bulk_create elsewhere.

    Raises IntegrityError (and writes nothing) when a transno is already taken.
    """
    if not rows:
        return
    if connection.vendor != "postgresql":
        LLMUsage.objects.bulk_create([LLMUsage(**row) for row in rows], batch_size=500)
        return
    table, columns, values = _row_writer()
    connection.ensure_connection()
    # The raw psycopg cursor raises psycopg's errors; wrapped, a taken transno is Django's IntegrityError,
    # which the caller's retry sorts into duplicate or conflict (otherwise a concurrent resend is a 500).
    with connection.wrap_database_errors, connection.connection.cursor() as cursor:
        if len(rows) <= SMALL_WRITE:
            placeholders = ", ".join(["%s"] * len(USAGE_FIELDS))
            sql = f"INSERT INTO {table} ({columns}) VALUES ({placeholders})"
            if len(rows) == 1:
                cursor.execute(sql, values(rows[0]))  # executemany would set up a pipeline for one row
            else:
                cursor.executemany(sql, map(values, rows))
            return
        with cursor.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(values(row))


def insert_usage_row_if_new(row: dict[str, Any]) -> bool:
    """PostgreSQL: insert one prepared row unless its org's transno is taken, in llmusage or in history;
    True when inserted. One round trip, where look-up then insert take two."""
    _, _, values = _row_writer()
    # Prepared (llmlog.db), with its 50 values bound by the server: each connection parses it once.
    with bound_cursor() as cursor:
        cursor.execute(_insert_if_new_sql(), [*values(row), row["transno"], row["userorgid"]], prepare=True)
        return cursor.fetchone() is not None


@functools.cache
def _insert_if_new_sql() -> str:
    # INSERT ... SELECT types its values by themselves, not by the target columns as INSERT ... VALUES
    # does: each is cast to its column's type. Text stays text: a cast to varchar(n) would cut an
    # over-long value silently, where the insert's own conversion refuses it.
    table, columns, _ = _row_writer()
    typed = ", ".join(
        f"%s::{'text' if isinstance(field, CharField) else field.db_type(connection)}"
        for field in USAGE_FIELDS
    )
    history = LLMUsageHistory._meta.db_table
    return (
        f"INSERT INTO {table} ({columns}) SELECT {typed} "
        f"WHERE NOT EXISTS (SELECT 1 FROM {history} WHERE transno = %s AND userorgid = %s) "
        "ON CONFLICT (transno, userorgid) DO NOTHING RETURNING 1"
    )


@functools.cache
def _row_writer() -> tuple[str, str, Callable[[dict[str, Any]], list[Any]]]:
    """(table, quoted column list, row -> values in column order with JSON wrapped) for raw writes."""
    names = [f.attname for f in USAGE_FIELDS]
    json_at = [i for i, name in enumerate(names) if name in JSON_COLUMNS]

    def values(row: dict[str, Any]) -> list[Any]:
        out = [row[name] for name in names]
        for i in json_at:
            if out[i] is not None:
                # Decoded JSON only, which msgspec writes as json.dumps would, several times faster.
                out[i] = Jsonb(out[i], dumps=msgspec.json.encode)
        return out

    columns = ", ".join(connection.ops.quote_name(f.column) for f in USAGE_FIELDS)
    return LLMUsage._meta.db_table, columns, values


# Below this many rows a plain INSERT beats COPY, whose set-up costs extra round trips.
SMALL_WRITE = 10


# The idempotency key: a transno names a call within its org (userorgid).
OrgTransno = tuple[str, str]


def _known_transnos(keys: list[OrgTransno]) -> dict[OrgTransno, tuple[str, str]]:
    """(transno, userorgid) -> (id, payload_hash) for records already stored, hot or history.

    Only the pairs asked for: another org's record under the same transno is never seen, so it can
    neither block a record nor be named in a conflict answer."""
    if not keys:
        return {}
    if connection.vendor == "postgresql":
        # Two array parameters instead of a thousand pairs (planning a long IN list costs more than the
        # probe), and the two tables named directly: planning the 50-column llmusage_all view costs 3x
        # more. The join on (transno, userorgid) probes each table's unique key.
        pairs = "unnest(%(t)s::text[], %(o)s::text[]) AS k(transno, userorgid)"
        sql = (
            f"SELECT u.transno, u.userorgid, u.id, u.payload_hash FROM llmusage u JOIN {pairs} "
            "ON u.transno = k.transno AND u.userorgid = k.userorgid UNION ALL "
            f"SELECT h.transno, h.userorgid, h.id, h.payload_hash FROM llmusage_history h JOIN {pairs} "
            "ON h.transno = k.transno AND h.userorgid = k.userorgid"
        )
        with connection.cursor() as cursor:
            cursor.execute(sql, {"t": [t for t, _ in keys], "o": [o for _, o in keys]})
            rows = cursor.fetchall()
    else:
        wanted = set(keys)
        rows = [
            row
            for row in UsageAll.objects.filter(
                transno__in={t for t, _ in keys}, userorgid__in={o for _, o in keys}
            ).values_list("transno", "userorgid", "id", "payload_hash")
            if (row[0], row[1]) in wanted
        ]
    return {(transno, org): (str(pk), digest) for transno, org, pk, digest in rows}


def usage_ingest(*, body: bytes, org: str = "") -> IngestResult:
    """Store the records of one request: created, duplicate (same payload), conflict, or field errors.

    `org` is the ingesting key's org ("" for a platform key): records are pinned to it.
    """
    raw_items, is_bulk = parse_body(body)
    stated = [stated_fields(raw) for raw in raw_items]
    # Before anything is decoded or stored: an org key stating money is refused whole.
    refuse_stated_by_org(org=org, stated=[name for fields in stated if fields for name in fields.stated()])
    records: list[UsageIn | RecordError] = []
    for raw, fields in zip(raw_items, stated, strict=True):
        money_errors = {
            name: problem
            for name in ("amount", "cost")
            if fields is not None
            and (text := fields.sent(name)) is not None
            and (problem := money_text_problem(text))
        }
        if money_errors:
            records.append(RecordError(money_errors))
            continue
        try:
            records.append(decode_record(raw))
        except RecordError as exc:
            records.append(exc)
    return usage_ingest_records(records=records, org=org, is_bulk=is_bulk)


def usage_ingest_records(
    *, records: list[UsageIn | RecordError], org: str = "", is_bulk: bool = True
) -> IngestResult:
    """`usage_ingest` for records already decoded (the gateway adapters map theirs onto UsageIn).

    A RecordError in the list is a record that could not be decoded: it is reported at its index.
    Raises StatedByOrgKey, before anything is stored, when an org key's record states amount, cost,
    ownerid or price.
    """
    refuse_stated_by_org(
        org=org,
        stated=[
            name
            for record in records
            if isinstance(record, UsageIn)
            for name in PLATFORM_ONLY_FIELDS
            if getattr(record, name) not in (None, "")
        ],
    )
    result = IngestResult(
        is_bulk=is_bulk, items=[ItemResult(index=i, status="error") for i in range(len(records))]
    )
    now, tz = timezone.now(), timezone.get_current_timezone()
    prepared: dict[int, PreparedRecord] = {}
    for index, record in enumerate(records):
        if isinstance(record, RecordError):
            result.items[index].errors = record.errors
            continue
        try:
            prepared[index] = prepare_record(record, now=now, org=org, tz=tz)
        except RecordError as exc:
            result.items[index].errors = exc.errors
    positions = list(prepared)
    unpriceable = apply_prices([prepared[index].row for index in positions])
    for position, errors in unpriceable.items():
        result.items[positions[position]].errors = errors
        del prepared[positions[position]]

    if _inserted_alone(prepared, result):
        return result
    # Three tries: a transno taken by a concurrent request between our look-up and our insert makes
    # the COPY fail whole; the next look-up sees it and sorts it into duplicate or conflict.
    for attempt in range(3):
        to_insert = _classify(prepared, result)
        try:
            with _write_transaction(len(to_insert)):
                write_usage_rows([record.row for _, record in to_insert])
        except IntegrityError:
            if attempt == 2:
                raise
            continue
        _created(to_insert, result)
        return result
    raise AssertionError("unreachable")


def _inserted_alone(prepared: dict[int, PreparedRecord], result: IngestResult) -> bool:
    """The hot path of a gateway sending one record at a time: on PostgreSQL a new record is inserted
    in one statement, without the look-up. False when it does not apply or the transno is taken (the
    look-up then tells duplicate from conflict)."""
    if len(prepared) != 1 or connection.vendor != "postgresql":
        return False
    ((index, record),) = prepared.items()
    if not insert_usage_row_if_new(record.row):
        return False
    result.items[index].transno = record.row["transno"]
    _created([(index, record)], result)
    return True


def _created(inserted: list[tuple[int, PreparedRecord]], result: IngestResult) -> None:
    for index, record in inserted:
        result.items[index].status = "created"
        result.items[index].id = str(record.row["id"])
        result.items[index].row = record.row
    if any(record.row["accounting_status"] == AccountingStatus.PENDING for _, record in inserted):
        transaction.on_commit(request_posting_soon)  # debounced: one task per few seconds at most
    count_ingest(item.status for item in result.items)  # /metrics: llmlog_ingest_records_total


def _write_transaction(count: int) -> AbstractContextManager:
    """One transaction for the batch; a single row outside any transaction needs none (its INSERT is
    atomic by itself, and BEGIN/COMMIT would double the round trips of the one-record hot path)."""
    if count <= 1 and not connection.in_atomic_block:
        return nullcontext()
    return transaction.atomic()


def _classify(prepared: dict[int, PreparedRecord], result: IngestResult) -> list[tuple[int, PreparedRecord]]:
    """Mark duplicates and conflicts (against the tables and within the batch); return what to insert."""
    known = _known_transnos([(r.row["transno"], r.row["userorgid"]) for r in prepared.values()])
    to_insert: list[tuple[int, PreparedRecord]] = []
    for index, record in prepared.items():
        item = result.items[index]
        transno = record.row["transno"]
        key = (transno, record.row["userorgid"])
        item.transno, item.errors = transno, None
        if key in known:
            existing_id, existing_hash = known[key]
            item.id = existing_id
            if existing_hash == record.payload_hash:
                item.status = "duplicate"
            else:
                item.status = "conflict"
                item.errors = {"transno": f"{transno!r} was already recorded with a different payload."}
            continue
        known[key] = (str(record.row["id"]), record.payload_hash)
        to_insert.append((index, record))
    return to_insert
