"""The wire format of native ingest: one record as a gateway sends it (`UsageIn`), the request body
split into records, each record decoded, and msgspec's messages turned into errors keyed by field.

The hot path stays out of DRF's serializers (an order of magnitude too slow for 1000-record batches,
see ECOSYSTEM.md): msgspec decodes and type-checks each item. The body's bounds are llmlog.bodies'.
"""

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

import msgspec
from django.conf import settings

from llmlog.bodies import check_containers, json_array_items, json_error
from llmlog.limits import MAX_TOKENS, MAX_TOTAL_TOKENS, MAX_WEB_SEARCHES

Tokens = Annotated[int, msgspec.Meta(ge=0, le=MAX_TOKENS)] | None
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
    # What the gateway or provider reported the call cost: kept beside `cost`, moves no money (any key).
    provider_cost: Decimal | None = None
    currency: Annotated[str, msgspec.Meta(pattern=r"\A[A-Z]{3}\Z")] = "USD"
    status: Literal["success", "failed"] = "success"
    code: Annotated[int, msgspec.Meta(ge=100, le=599)] | None = None
    error_message: Text(65536) = ""
    retry_times: Annotated[int, msgspec.Meta(ge=0, le=2**31 - 1)] = 0
    ioinfo: IoInfoIn | None = None
    metadata: dict[str, Any] | None = None
    price: dict[str, Any] | None = None  # the unit prices the gateway applied (a platform key only)


class RecordError(Exception):
    """A record that breaks a rule; `errors` maps each field to what is wrong with it."""

    def __init__(self, errors: dict[str, str]) -> None:
        super().__init__("; ".join(f"{name}: {message}" for name, message in errors.items()))
        self.errors = errors


class BodyError(Exception):
    """The request as a whole cannot be read (malformed JSON, too many records)."""


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
        raise RecordError(validation_errors(str(exc))) from None
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


def validation_errors(message: str) -> dict[str, str]:
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
