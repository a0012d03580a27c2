"""OpenTelemetry GenAI spans over OTLP/HTTP mapped onto the native record.

An application instrumented with the GenAI semantic conventions (LiteLLM's `otel` callback, OpenLLMetry,
OpenLIT) exports spans; each span that describes a model call (a `gen_ai.*` model or token count) becomes
a usage record keyed by its trace and span id, so an exporter's retry is a duplicate, not a second record.
Other spans (HTTP, database, agent and tool spans) are ignored and counted in the answer.
"""

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from llmlog.adapters.common import (
    GatewayUsageIn,
    Mapped,
    MappingError,
    clip,
    key_hash,
    money_from_json,
    to_decimal,
    usage_in,
)
from llmlog.ingest.service import IngestResult
from llmlog.ingest.wire import RecordError

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# Attribute names, newest convention first; the older names are still what many instrumentations emit.
REQUEST_MODEL = ("gen_ai.request.model",)
RESPONSE_MODEL = ("gen_ai.response.model",)
PROVIDER = ("gen_ai.provider.name", "gen_ai.system")
INPUT_TOKENS = ("gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens")
OUTPUT_TOKENS = ("gen_ai.usage.output_tokens", "gen_ai.usage.completion_tokens")
CACHED_TOKENS = ("gen_ai.usage.cache_read.input_tokens", "gen_ai.usage.cache_read_input_tokens")
CACHE_CREATION_TOKENS = (
    "gen_ai.usage.cache_creation.input_tokens",
    "gen_ai.usage.cache_creation_input_tokens",
)
REASONING_TOKENS = ("gen_ai.usage.reasoning.output_tokens", "gen_ai.usage.reasoning_tokens")
# The cost the instrumentation reports (LiteLLM's otel callback, OpenLIT): a report, not a charge.
COST = ("gen_ai.cost.total_cost", "gen_ai.usage.cost")
# What a platform key's gateway may state (llmlog.adapters.common's docstring); an org key that sets
# one is refused whole.
STATED_ATTRIBUTES = {"llmlog.amount": "amount", "llmlog.cost": "cost", "llmlog.ownerid": "ownerid"}
TIME_TO_FIRST_CHUNK = ("gen_ai.response.time_to_first_chunk",)
STREAM = ("gen_ai.request.stream", "llm.is_streaming")
HTTP_STATUS = ("http.response.status_code",)
USER = ("metadata.user_api_key_user_id", "user.id", "enduser.id")
# The org a span's record belongs to: LiteLLM's otel callback sets the span attribute; any other service
# names its org once, as a resource attribute (OTEL_RESOURCE_ATTRIBUTES=llmlog.userorgid=acme). An org
# key's records are its org's whatever they say (ingest).
ORG_SPAN_ATTRIBUTE = "metadata.user_api_key_org_id"
ORG_RESOURCE_ATTRIBUTE = "llmlog.userorgid"
TOKEN_COUNTS = INPUT_TOKENS + OUTPUT_TOKENS + CACHED_TOKENS + CACHE_CREATION_TOKENS + REASONING_TOKENS

# The span attribute each native field comes from: errors name what the instrumentation sets.
SOURCE_NAMES = {
    "transno": "traceId/spanId",
    "model_name": "gen_ai.request.model",
    "llmid": "gen_ai.response.model",
    "provider": "gen_ai.provider.name",
    "provider_type": "gen_ai.provider.name",
    "use_time": "startTimeUnixNano",
    "finish_seconds": "endTimeUnixNano",
    "responsed_seconds": "gen_ai.response.time_to_first_chunk",
    "input_tokens": "gen_ai.usage.input_tokens",
    "output_tokens": "gen_ai.usage.output_tokens",
    "cached_tokens": "gen_ai.usage.cache_read.input_tokens",
    "cache_creation_tokens": "gen_ai.usage.cache_creation.input_tokens",
    "reasoning_tokens": "gen_ai.usage.reasoning.output_tokens",
    "provider_cost": "gen_ai.cost.total_cost",
    **{native: attribute for attribute, native in STATED_ATTRIBUTES.items()},
    "code": "http.response.status_code",
    "userid": "user.id",
    "userorgid": "metadata.user_api_key_org_id",
    "group": "metadata.user_api_key_team_id",
    "token_name": "metadata.user_api_key_alias",
    "token_key_hash": "metadata.user_api_key_hash",
    "feature": "service.name",
    "taskid": "gen_ai.conversation.id",
}


# --- mapping -------------------------------------------------------------------------------------


@dataclass
class SpanBatch:
    """The spans of one export request: the mapped records and what was left out."""

    records: list[Mapped] = field(default_factory=list)
    span_ids: list[str] = field(default_factory=list)  # the transno of each record, for messages
    without_gen_ai: int = 0  # spans with no gen_ai.* attribute at all
    without_model: int = 0  # gen_ai spans that are not model calls: agents, tools, workflows


def otlp_records(request: ExportTraceServiceRequest) -> SpanBatch:
    batch = SpanBatch()
    for resource_spans in request.resource_spans:
        resource = _attributes(resource_spans.resource.attributes)
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                attributes = _attributes(span.attributes)
                if not any(key.startswith("gen_ai.") for key in attributes):
                    batch.without_gen_ai += 1
                    continue
                if not _first_key(attributes, REQUEST_MODEL + RESPONSE_MODEL + TOKEN_COUNTS):
                    batch.without_model += 1
                    continue
                transno = f"{span.trace_id.hex()}-{span.span_id.hex()}"
                batch.span_ids.append(transno)
                try:
                    batch.records.append(span_usage(span, attributes, resource, transno))
                except RecordError as exc:
                    # Named even when the span is malformed: an org key's statement refuses the request.
                    stated = [native for name, native in STATED_ATTRIBUTES.items() if name in attributes]
                    batch.records.append(MappingError(exc.errors, stated))
    return batch


def _attributes(key_values) -> dict[str, AnyValue]:
    return {kv.key: kv.value for kv in key_values}


def _first_key(attributes: dict[str, AnyValue], names: tuple[str, ...]) -> str | None:
    for name in names:
        if name in attributes:
            return name
    return None


def span_usage(
    span: Span, attributes: dict[str, AnyValue], resource: dict[str, AnyValue], transno: str
) -> GatewayUsageIn:
    """One model-call span as a native record (raises RecordError naming the span's attributes)."""
    errors: dict[str, str] = {}
    if len(span.trace_id) != 16 or len(span.span_id) != 8:
        errors["traceId/spanId"] = "A span needs a 16-byte trace id and an 8-byte span id."
    use_time = _start_time(span, errors)
    request_model = _text(attributes, REQUEST_MODEL, errors)
    response_model = _text(attributes, RESPONSE_MODEL, errors)
    if not (request_model or response_model):
        errors["gen_ai.request.model"] = "Required: the span has token counts but names no model."
    counts = _token_counts(attributes, errors)
    reported_cost = _number(attributes, COST, errors)
    amount = _money(attributes, "llmlog.amount", errors)
    cost = _money(attributes, "llmlog.cost", errors)
    ownerid = _text(attributes, ("llmlog.ownerid",), errors)
    first_chunk = _number(attributes, TIME_TO_FIRST_CHUNK, errors)
    http_status = _count(attributes, HTTP_STATUS, errors)
    provider = _text(attributes, PROVIDER, errors)
    if errors:
        raise RecordError(errors)

    start_ns, end_ns = span.start_time_unix_nano, span.end_time_unix_nano
    failed = span.status.code == Status.STATUS_CODE_ERROR
    error_message = span.status.message or _text(attributes, ("error.type",), {}) or ""
    fields = {
        "transno": transno,
        "taskid": clip(_text(attributes, ("gen_ai.conversation.id",), {}), 256),
        "model_name": request_model or response_model,
        "llmid": request_model or response_model,
        "provider": provider,
        "provider_type": clip(provider, 32),
        "use_time": use_time,
        "finish_seconds": max(0, end_ns - start_ns) / 1e9 if end_ns else None,
        "responsed_seconds": first_chunk,
        "is_stream": _flag(attributes, STREAM),
        **counts,
        "provider_cost": to_decimal(reported_cost),
        "amount": amount,
        "cost": cost,
        "ownerid": ownerid,
        "status": "failed" if failed else "success",
        "code": http_status,
        "error_message": clip(error_message, 65536) if failed else "",
        "userid": _text(attributes, USER, {}),
        "userorgid": _userorgid(attributes, resource),
        "group": _text(attributes, ("metadata.user_api_key_team_id",), {}),
        "token_name": clip(_text(attributes, ("metadata.user_api_key_alias",), {}), 150),
        "token_key_hash": key_hash(_text(attributes, ("metadata.user_api_key_hash",), {})),
        "feature": clip(_text(resource, ("service.name",), {}), 64),
        "ioinfo": _messages(attributes),
        "metadata": _span_metadata(span, attributes, request_model, response_model),
    }
    return usage_in(fields, source_names=SOURCE_NAMES)


def _start_time(span: Span, errors: dict[str, str]) -> datetime | None:
    """When the call started: a span without a start, or one past what a datetime holds, is refused."""
    try:
        if span.start_time_unix_nano:
            return EPOCH + timedelta(microseconds=span.start_time_unix_nano // 1000)
    except OverflowError:
        pass
    errors["startTimeUnixNano"] = "Required: nanoseconds since the epoch, before the year 10000."
    return None


def _token_counts(attributes: dict[str, AnyValue], errors: dict[str, str]) -> dict[str, int]:
    """The token counts the span states, by native name; one it does not state takes the native default."""
    counts = {
        "input_tokens": _count(attributes, INPUT_TOKENS, errors),
        "output_tokens": _count(attributes, OUTPUT_TOKENS, errors),
        "cached_tokens": _count(attributes, CACHED_TOKENS, errors),
        "cache_creation_tokens": _count(attributes, CACHE_CREATION_TOKENS, errors),
        "reasoning_tokens": _count(attributes, REASONING_TOKENS, errors),
    }
    return {name: value for name, value in counts.items() if value is not None}


def _userorgid(attributes: dict[str, AnyValue], resource: dict[str, AnyValue]) -> str | None:
    """The org the span names, else the one its service names for all its spans (ORG_RESOURCE_ATTRIBUTE)."""
    return _text(attributes, (ORG_SPAN_ATTRIBUTE,), {}) or _text(resource, (ORG_RESOURCE_ATTRIBUTE,), {})


def _span_metadata(
    span: Span, attributes: dict[str, AnyValue], request_model: str | None, response_model: str | None
) -> dict[str, Any]:
    """What llmlog keeps of the span beyond the native fields: its name, the GenAI operation, and the
    model that answered when it is not the one asked for."""
    metadata: dict[str, Any] = {"source": "otlp", "span_name": clip(span.name, 256)}
    operation = _text(attributes, ("gen_ai.operation.name",), {})
    if operation:
        metadata["operation"] = operation
    if request_model and response_model and response_model != request_model:
        metadata["response_model"] = response_model
    return metadata


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [_value(item) for item in value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: _value(kv.value) for kv in value.kvlist_value.values}
    if kind == "bytes_value":
        return value.bytes_value.hex()
    return getattr(value, kind)


def _pick(attributes: dict[str, AnyValue], names: tuple[str, ...]) -> tuple[str, Any]:
    name = _first_key(attributes, names)
    return (name, _value(attributes[name])) if name else ("", None)


def _text(attributes: dict[str, AnyValue], names: tuple[str, ...], errors: dict[str, str]) -> str | None:
    name, value = _pick(attributes, names)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        errors[name] = f"Expected a string, got {type(value).__name__}."
        return None
    return value


def _count(attributes: dict[str, AnyValue], names: tuple[str, ...], errors: dict[str, str]) -> int | None:
    name, value = _pick(attributes, names)
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # JavaScript SDKs send integral numbers as doubles
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        errors[name] = f"Expected a non-negative integer, got {value!r}."
        return None
    return value


def _number(attributes: dict[str, AnyValue], names: tuple[str, ...], errors: dict[str, str]) -> float | None:
    name, value = _pick(attributes, names)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        errors[name] = f"Expected a number, got {value!r}."
        return None
    return value


def _money(attributes: dict[str, AnyValue], name: str, errors: dict[str, str]) -> Any:
    """A stated money attribute: a string of ASCII digits with at most one point, or an unsigned number."""
    _, value = _pick(attributes, (name,))
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        errors[name] = f"Expected a decimal number or string, got {value!r}."
        return None
    return money_from_json(msgspec.Raw(msgspec.json.encode(value)), name, errors)


def _flag(attributes: dict[str, AnyValue], names: tuple[str, ...]) -> bool:
    _, value = _pick(attributes, names)
    return value is True or (isinstance(value, str) and value.lower() == "true")


def _messages(attributes: dict[str, AnyValue]) -> dict[str, Any] | None:
    """The prompt and completion, when the instrumentation records content (ingest truncates them)."""
    _, request = _pick(attributes, ("gen_ai.input.messages", "gen_ai.prompt"))
    _, response = _pick(attributes, ("gen_ai.output.messages", "gen_ai.completion"))
    if request is None and response is None:
        return None
    return {"request": request, "response": response}


# --- the answer ----------------------------------------------------------------------------------


def export_response(batch: SpanBatch, result: IngestResult) -> ExportTraceServiceResponse:
    """OTLP's answer: partial_success carries the rejected count and a message; a fully accepted request
    may still carry a message (rejected_spans 0), which is where the ignored spans are counted."""
    response = ExportTraceServiceResponse()
    rejected = [item for item in result.items if item.status in ("error", "conflict")]
    notes = []
    if batch.without_gen_ai or batch.without_model:
        notes.append(
            f"ignored {batch.without_gen_ai} span(s) without gen_ai.* attributes and "
            f"{batch.without_model} gen_ai span(s) without a model or token counts"
        )
    if rejected:
        details = "; ".join(
            f"span {batch.span_ids[item.index]}: "
            + ", ".join(f"{name}: {message}" for name, message in (item.errors or {}).items())
            for item in rejected[:10]
        )
        more = f" (and {len(rejected) - 10} more)" if len(rejected) > 10 else ""
        notes.append(f"rejected {len(rejected)} span(s): {details}{more}")
    if notes:
        created, duplicates = result.count("created"), result.count("duplicate")
        notes.insert(0, f"stored {created} usage record(s), {duplicates} already stored")
        response.partial_success.rejected_spans = len(rejected)
        response.partial_success.error_message = "; ".join(notes)
    return response
