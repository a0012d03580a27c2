"""The design's rules for one decoded record: `prepare_record` checks it (token counts, money, bounds,
time, address, JSON) and makes the row that is stored, naming every bad field in one RecordError."""

import functools
import hashlib
import ipaddress
import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from decimal import Decimal
from typing import Any

import msgspec
from django.conf import settings
from django.utils import timezone
from uuid_utils.compat import uuid7

from core.money import quantize_money
from llmlog.ingest.tokens import token_counts
from llmlog.ingest.wire import IoInfoIn, RecordError, UsageIn
from llmlog.limits import MAX_MONEY
from llmlog.models import AccountingStatus
from llmlog.pricing import TokenCounts
from llmlog.times import unix_seconds

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

# Every text field of the record, checked for NUL (PostgreSQL's text refuses it).
TEXT_FIELDS = tuple(
    f.name
    for f in msgspec.inspect.type_info(UsageIn).fields
    if any(isinstance(kind, msgspec.inspect.StrType) for kind in getattr(f.type, "types", (f.type,)))
)


@dataclass
class PreparedRecord:
    row: dict[str, Any]
    payload_hash: str


def payload_json(record: UsageIn) -> bytes:
    """The record as sent, keys sorted: its digest is the payload hash (key order ignored; the raw
    gateway key is never in it, prepare_record hashes it first)."""
    return msgspec.json.encode(record, order="sorted")


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
    # Encoded once: hashed below, and read first for a NUL, which msgspec writes as \u0000 (a record
    # whose JSON has none holds none, and its text fields need no walk).
    encoded = payload_json(record)
    checked = _check(record, errors, now=now, may_hold_nul=b"\\u0000" in encoded)
    if errors:
        raise RecordError(errors)
    digest = hashlib.sha256(encoded).hexdigest()
    row = _row(record, checked, now=now, tz=tz, digest=digest)
    return PreparedRecord(row=row, payload_hash=digest)


@dataclass(frozen=True)
class _Checked:
    """What the rules read or derived from a record, as its row stores it."""

    use_time: datetime
    tokens: TokenCounts
    amount: Decimal | None
    cost: Decimal | None
    provider_cost: Decimal | None
    request_ip: str | None
    metadata: dict[str, Any]


def _check(record: UsageIn, errors: dict[str, str], *, now: datetime, may_hold_nul: bool = True) -> _Checked:
    """Check every field with a rule, adding what is wrong to `errors` (in the fields' order).
    `may_hold_nul` False: the record's JSON has no \\u0000, so no text field holds a NUL."""
    use_time = _use_time(record.use_time, errors, now=now)
    tokens = token_counts(record, errors)
    amount = _money(record.amount, "amount", errors)
    cost = _money(record.cost, "cost", errors)
    provider_cost = _money(record.provider_cost, "provider_cost", errors)
    if record.price is not None:
        _check_json(record.price, "price", USAGES_MAX_BYTES, errors)
    request_ip = _ip(record.request_ip, errors)
    for name in TEXT_FIELDS if may_hold_nul else ():
        value = getattr(record, name)
        if value is not None and "\x00" in value:
            errors[name] = NUL_MESSAGE
    metadata = record.metadata or {}
    _check_json(metadata, "metadata", settings.LLMLOG_METADATA_MAX_BYTES, errors)
    if record.usages is not None:
        _check_json(record.usages, "usages", USAGES_MAX_BYTES, errors)
    return _Checked(use_time, tokens, amount, cost, provider_cost, request_ip, metadata)


def _row(
    record: UsageIn, checked: _Checked, *, now: datetime, tz: tzinfo | None, digest: str
) -> dict[str, Any]:
    """The llmusage row of a record that passed its rules, every column but `seq` (the database's)."""
    return {
        "id": uuid7(),
        "transno": record.transno or uuid7().hex,
        "taskid": record.taskid,
        "use_date": checked.use_time.astimezone(tz or timezone.get_current_timezone()).date(),
        "use_time": checked.use_time,
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
        "request_ip": checked.request_ip,
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
        **checked.tokens.__dict__,
        "total_tokens": checked.tokens.input_tokens + checked.tokens.output_tokens,
        "usages": record.usages,
        "amount": checked.amount,
        "cost": checked.cost,
        "provider_cost": checked.provider_cost,
        "currency": record.currency,
        "price": record.price,
        "status": record.status,
        "code": record.code,
        "error_message": record.error_message,
        "retry_times": record.retry_times,
        "ioinfo": truncate_ioinfo(record.ioinfo, settings.LLMLOG_IO_LIMIT),
        "accounting_status": AccountingStatus.PENDING,
        "accounted_at": None,
        "metadata": checked.metadata,
        "payload_hash": digest,
    }


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
        seconds = unix_seconds(value)
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
    address, problem = _parsed_ip(value)
    if problem is not None:
        errors["request_ip"] = problem
    return address


@functools.lru_cache(maxsize=4096)
def _parsed_ip(value: str) -> tuple[str | None, str | None]:
    """(the address as stored, None) or (None, what is wrong). Cached: ipaddress parses in pure Python
    (a tenth of a LiteLLM record's rules, which carry the caller's address), and a gateway's records come
    from few addresses. The answer depends on the text alone; 4096 entries of at most 64 characters."""
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        return None, f"{value!r} is not an IPv4 or IPv6 address."
    if getattr(address, "scope_id", None):  # fe80::1%eth0: the database's inet has no zone index
        return None, f"{value!r} has a zone index (%...); send the address alone."
    return str(address), None


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
