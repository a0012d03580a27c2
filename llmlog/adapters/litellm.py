"""LiteLLM's GenericAPILogger: its StandardLoggingPayload records mapped onto the native record.

LiteLLM (`litellm.integrations.generic_api.generic_api_callback.GenericAPILogger`) POSTs a batch as a
JSON array (its default), as NDJSON, or one record per request. Only the fields llmlog keeps are
decoded; the rest of the payload (model map, cost breakdown, hidden params) is ignored.
"""

from decimal import Decimal
from typing import Any

import msgspec
from django.conf import settings

from llmlog.adapters.common import (
    GatewayUsageIn,
    Mapped,
    MappingError,
    clip,
    epoch_seconds,
    key_hash,
    money_from_json,
    usage_in,
)
from llmlog.bodies import check_containers, json_array_items, json_error, ndjson_lines
from llmlog.ingest.stated import NOT_SENT, stated_fields
from llmlog.ingest.wire import BodyError, RecordError, validation_errors


class Metadata(msgspec.Struct):
    """StandardLoggingMetadata: who made the call, as LiteLLM's proxy authenticated it."""

    user_api_key_hash: str | None = None
    user_api_key_alias: str | None = None
    user_api_key_user_id: str | None = None
    user_api_key_team_id: str | None = None
    user_api_key_org_id: str | None = None
    user_api_key_end_user_id: str | None = None
    user_api_key_request_route: str | None = None
    usage_object: dict[str, Any] | None = None


class ErrorInformation(msgspec.Struct):
    error_code: str | int | None = None
    error_class: str | None = None


class StandardLoggingPayload(msgspec.Struct):
    id: str | None = None
    litellm_call_id: str | None = None
    trace_id: str | None = None
    call_type: str | None = None
    stream: bool | None = None
    status: str | None = None
    cache_hit: bool | None = None
    custom_llm_provider: str | None = None
    model: str | None = None
    model_id: str | None = None
    model_group: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    start_time: float | None = msgspec.field(default=None, name="startTime")
    end_time: float | None = msgspec.field(default=None, name="endTime")
    completion_start_time: float | None = msgspec.field(default=None, name="completionStartTime")
    # What LiteLLM computed the call cost (a JSON number, or a string): a report, not a charge.
    response_cost: msgspec.Raw = NOT_SENT  # Raw takes no union: absent is NOT_SENT
    response_cost_failure_debug_info: dict[str, Any] | None = None
    metadata: Metadata | None = None
    request_tags: list[Any] | None = None
    end_user: str | None = None
    requester_ip_address: str | None = None
    messages: Any = None
    response: Any = None
    error_str: str | None = None
    error_information: ErrorInformation | None = None
    # Not LiteLLM's: what a platform key's gateway may state (llmlog.adapters.common's docstring).
    amount: msgspec.Raw = NOT_SENT
    cost: msgspec.Raw = NOT_SENT
    ownerid: Any = None
    price: Any = None


# The LiteLLM field each native field comes from: errors name what the gateway's operator sees.
SOURCE_NAMES = {
    "transno": "id",
    "taskid": "trace_id",
    "model_name": "model",
    "llmid": "model",
    "provider": "custom_llm_provider",
    "provider_type": "custom_llm_provider",
    "channel_id": "model_id",
    "use_time": "startTime",
    "responsed_seconds": "completionStartTime",
    "finish_seconds": "endTime",
    "token_key_hash": "metadata.user_api_key_hash",
    "token_name": "metadata.user_api_key_alias",
    "userid": "metadata.user_api_key_user_id",
    "group": "metadata.user_api_key_team_id",
    "userorgid": "metadata.user_api_key_org_id",
    "endpoint": "metadata.user_api_key_request_route",
    "request_ip": "requester_ip_address",
    "input_tokens": "prompt_tokens",
    "output_tokens": "completion_tokens",
    "cached_tokens": "metadata.usage_object.prompt_tokens_details.cached_tokens",
    "cache_creation_tokens": "metadata.usage_object.cache_creation_input_tokens",
    "reasoning_tokens": "metadata.usage_object.completion_tokens_details.reasoning_tokens",
    "image_input_tokens": "metadata.usage_object.prompt_tokens_details.image_tokens",
    "usages": "metadata.usage_object",
    "provider_cost": "response_cost",
    "status": "status",
    "code": "error_information.error_code",
    "error_message": "error_str",
    "ioinfo": "messages",
    "metadata": "request_tags",
}

STATUSES = {"success": "success", "failure": "failed"}
_decoder = msgspec.json.Decoder(StandardLoggingPayload)
MAX_RECORDS_SETTING = "LLMLOG_MAX_RECORDS_PER_REQUEST"


def parse_litellm_body(body: bytes, *, limit: int | None = None) -> list[msgspec.Raw | RecordError]:
    """The records of one request: a JSON array, NDJSON, or one JSON object.

    At most `limit` records (LLMLOG_MAX_RECORDS_PER_REQUEST), counted while the body is split:
    llmlog.bodies.TooManyRecords at the first past it. A malformed NDJSON line is reported as that
    record's error; the other lines are kept.
    """
    limit = limit or settings.LLMLOG_MAX_RECORDS_PER_REQUEST
    stripped = body.strip()
    if not stripped:
        raise BodyError("The request body is empty: send LiteLLM's records as a JSON array or NDJSON.")
    if stripped[:1] == b"[":
        try:
            items: list[msgspec.Raw | RecordError] = list(
                json_array_items(stripped, limit=limit, setting=MAX_RECORDS_SETTING)
            )
        except msgspec.DecodeError as exc:
            raise BodyError(json_error(exc)) from None
        except RecursionError:
            raise BodyError("Malformed JSON: nested too deeply to read.") from None
        if not items:
            raise BodyError("The list of records is empty.")
        check_containers(stripped, records=limit)
        return items
    try:
        items = [msgspec.json.decode(stripped, type=msgspec.Raw)]  # one object, perhaps over many lines
        check_containers(stripped, records=limit)
        return items
    except RecursionError:
        raise BodyError("Malformed JSON: nested too deeply to read.") from None
    except msgspec.DecodeError as exc:
        lines = ndjson_lines(stripped, limit=limit, setting=MAX_RECORDS_SETTING)
        if len(lines) < 2:
            raise BodyError(json_error(exc)) from None
    check_containers(stripped, records=limit)
    items = []
    for number, line in enumerate(lines, start=1):
        try:
            items.append(msgspec.json.decode(line, type=msgspec.Raw))
        except (msgspec.DecodeError, RecursionError) as exc:
            items.append(RecordError({"non_field_errors": f"On line {number}: {json_error(exc)}"}))
    if all(isinstance(item, RecordError) for item in items):
        first = items[0].errors["non_field_errors"]  # type: ignore[union-attr]
        raise BodyError(f"Malformed NDJSON: no line is a JSON object ({first}).")
    return items


def litellm_records(items: list[msgspec.Raw | RecordError]) -> list[Mapped]:
    mapped: list[Mapped] = []
    for item in items:
        if isinstance(item, RecordError):
            mapped.append(item)
            continue
        try:
            mapped.append(litellm_usage(_decode(item)))
        except RecordError as exc:
            # Named even when the record is malformed: an org key's statement refuses the request.
            fields = stated_fields(item)
            mapped.append(MappingError(exc.errors, fields.stated() if fields else ()))
    return mapped


def _decode(raw: msgspec.Raw) -> StandardLoggingPayload:
    try:
        return _decoder.decode(raw)
    except msgspec.ValidationError as exc:
        raise RecordError(validation_errors(str(exc))) from None
    except (msgspec.DecodeError, RecursionError, UnicodeDecodeError):
        # Splitting the body checked the record's shape only: its strings and nesting are read here.
        raise RecordError(
            {"non_field_errors": "Malformed JSON: not valid UTF-8, or nested too deeply."}
        ) from None


def litellm_usage(payload: StandardLoggingPayload) -> GatewayUsageIn:
    """One StandardLoggingPayload as a native record (raises RecordError naming LiteLLM's fields)."""
    transno, status = _transno_and_status(payload)
    errors: dict[str, str] = {}
    meta = payload.metadata or Metadata()
    usage = meta.usage_object or {}
    start = payload.start_time
    use_time = _time(start, "startTime", errors)
    amount = money_from_json(payload.amount, "amount", errors)
    cost = money_from_json(payload.cost, "cost", errors)
    provider_cost = _provider_cost(payload, errors)
    end_user = meta.user_api_key_end_user_id or payload.end_user
    metadata = _metadata(payload, end_user)
    if errors:
        raise RecordError(errors)

    fields = {
        "transno": transno,
        "taskid": clip(payload.trace_id, 256),
        "model_name": payload.model,
        "llmid": payload.model,
        "provider": payload.custom_llm_provider,
        "provider_type": clip(payload.custom_llm_provider, 32),
        "channel_id": clip(payload.model_id, 64),
        "use_time": use_time,
        "responsed_seconds": _since(start, payload.completion_start_time),
        "finish_seconds": _since(start, payload.end_time),
        "token_key_hash": key_hash(meta.user_api_key_hash),
        "token_name": clip(meta.user_api_key_alias, 150),
        "userid": meta.user_api_key_user_id or end_user,
        "group": meta.user_api_key_team_id,
        "userorgid": meta.user_api_key_org_id,
        "endpoint": clip(meta.user_api_key_request_route or payload.call_type, 255),
        "request_ip": payload.requester_ip_address or None,
        "is_stream": bool(payload.stream),
        "input_tokens": payload.prompt_tokens or 0,
        "output_tokens": payload.completion_tokens or 0,
        "cached_tokens": _first(usage, CACHED_TOKENS),
        "cache_creation_tokens": _first(usage, CACHE_CREATION_TOKENS),
        "reasoning_tokens": _first(usage, REASONING_TOKENS),
        "image_input_tokens": _first(usage, IMAGE_TOKENS),
        "usages": usage or None,
        "provider_cost": provider_cost,
        "amount": amount,
        "cost": cost,
        "ownerid": payload.ownerid,
        "price": payload.price,
        "status": status,
        "code": _http_code(payload.error_information),
        "error_message": clip(payload.error_str, 65536) or "",
        "ioinfo": _ioinfo(payload),
        "metadata": metadata,
    }
    return usage_in(fields, source_names=SOURCE_NAMES)


def _transno_and_status(payload: StandardLoggingPayload) -> tuple[str, str]:
    """The record's idempotency key and native status; RecordError naming every required field that is
    missing or wrong at once (one resend fixes them all), before any other field is read."""
    errors: dict[str, str] = {}
    # A cache hit replays the cached response, id included: its own call id keeps it a record of its own.
    transno = payload.litellm_call_id if payload.cache_hit and payload.litellm_call_id else payload.id
    transno = transno or payload.litellm_call_id
    if not transno:
        errors["id"] = "Required: LiteLLM's record id is the idempotency key."
    if not payload.model:
        errors["model"] = "Required."
    if payload.start_time is None:
        errors["startTime"] = "Required (epoch seconds)."
    status = STATUSES.get(payload.status or "success")
    if status is None:
        errors["status"] = f"Expected 'success' or 'failure', got {payload.status!r}."
    if errors:
        raise RecordError(errors)
    return transno, status  # type: ignore[return-value]


def _provider_cost(payload: StandardLoggingPayload, errors: dict[str, str]) -> Decimal | None:
    """The cost LiteLLM reported (a malformed one is an error either way), but None when LiteLLM could not
    price the call (a model missing from its cost map): the cost is unknown, not zero, so ingest prices
    it from the cost price book instead."""
    reported_cost = money_from_json(payload.response_cost, "response_cost", errors)
    return None if payload.response_cost_failure_debug_info else reported_cost


def _metadata(payload: StandardLoggingPayload, end_user: str | None) -> dict[str, Any]:
    """What llmlog keeps of the call beyond the native fields: its tags, end user, model group and cache
    hit (with the id of the response it replayed)."""
    metadata: dict[str, Any] = {"source": "litellm"}
    if payload.request_tags:
        metadata["tags"] = payload.request_tags
    if end_user:
        metadata["end_user"] = end_user
    if payload.model_group and payload.model_group != payload.model:
        metadata["model_group"] = payload.model_group
    if payload.cache_hit:
        metadata["cache_hit"] = True
        metadata["response_id"] = payload.id
    if payload.request_tags and len(msgspec.json.encode(metadata)) > settings.LLMLOG_METADATA_MAX_BYTES:
        # Tags are the only open-ended part (so only they are measured): too many of them must not cost
        # the record.
        metadata["tags_dropped"] = len(metadata.pop("tags", ()))
    return metadata


def _ioinfo(payload: StandardLoggingPayload) -> dict[str, Any] | None:
    """The prompt and the answer, when LiteLLM logged either (a failed call logs its answer as {}: none)."""
    response = payload.response or None
    if payload.messages is None and response is None:
        return None
    return {"request": payload.messages, "response": response}


def _time(value: float, name: str, errors: dict[str, str]) -> Any:
    try:
        return epoch_seconds(value)
    except (OverflowError, OSError, ValueError):
        errors[name] = "Out of range (expected epoch seconds)."
        return None


def _since(start: float, moment: float | None) -> float | None:
    """Seconds from the start; a clock that stepped back a little gives 0, not a lost record."""
    if moment is None:
        return None
    return max(0.0, moment - start)


# Where each token count sits in LiteLLM's usage object, OpenAI's names first, then Anthropic's: split
# once here, not for every record.
CACHED_TOKENS = (("prompt_tokens_details", "cached_tokens"), ("cache_read_input_tokens",))
CACHE_CREATION_TOKENS = (("prompt_tokens_details", "cache_creation_tokens"), ("cache_creation_input_tokens",))
REASONING_TOKENS = (("completion_tokens_details", "reasoning_tokens"),)
IMAGE_TOKENS = (("prompt_tokens_details", "image_tokens"),)


def _first(usage: dict[str, Any], paths: tuple[tuple[str, ...], ...]) -> Any:
    """The first of `paths` present in LiteLLM's usage object."""
    for path in paths:
        value: Any = usage
        for part in path:
            value = value.get(part) if isinstance(value, dict) else None
        if value is not None:
            return value
    return None


def _http_code(info: ErrorInformation | None) -> int | None:
    if info is None or info.error_code is None:
        return None
    try:
        code = int(info.error_code)
    except ValueError:
        return None
    return code if 100 <= code <= 599 else None
