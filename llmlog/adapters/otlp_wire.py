"""OTLP/HTTP bodies in and out: an ExportTraceServiceRequest read from protobuf or JSON (OTLP/JSON
the fast way through msgspec where it can), counted and bounded before it is decoded; an answer encoded
in the request's encoding. What the spans mean is llmlog/adapters/otlp.py's."""

import base64
from typing import Annotated, Any

import msgspec
from django.conf import settings
from google.protobuf import json_format
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from llmlog.bodies import (
    CONTAINERS_PER_RECORD,
    MIN_CONTAINERS,
    TooBig,
    TooComplex,
    TooManyRecords,
    check_containers,
    json_error,
)
from llmlog.ingest.wire import BodyError

PROTOBUF = "application/x-protobuf"
JSON = "application/json"


# --- decoding ------------------------------------------------------------------------------------


def parse_otlp(
    body: bytes, content_type: str, *, limit: int | None = None
) -> "ExportTraceServiceRequest | _JsonRequest":
    """The export request in either OTLP/HTTP encoding; BodyError says what does not parse.

    At most `limit` spans (LLMLOG_MAX_RECORDS_PER_REQUEST), counted before the body is decoded into
    messages: llmlog.bodies.TooManyRecords past it, TooComplex past the messages (or JSON objects
    and arrays) that many spans can need.
    """
    limit = limit or settings.LLMLOG_MAX_RECORDS_PER_REQUEST
    message = ExportTraceServiceRequest()
    if content_type == PROTOBUF:
        count_protobuf_spans(body, limit=limit)
        try:
            message.ParseFromString(body)
        except DecodeError as exc:
            raise BodyError(f"The body is not an OTLP ExportTraceServiceRequest protobuf: {exc}") from None
        return message
    try:
        msgspec.json.decode(body, type=msgspec.Raw)  # syntax and depth, allocating nothing
        check_containers(body, records=limit)
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise BodyError(json_error(exc)) from None
    except RecursionError:
        raise BodyError("Malformed JSON: nested too deeply to read.") from None
    fast = _json_request(body)
    if fast is not None:
        if sum(len(scope.spans) for rs in fast.resource_spans for scope in rs.scope_spans) > limit:
            raise TooManyRecords(limit=limit, setting=MAX_RECORDS_SETTING, what="spans")
        return fast
    try:
        document = msgspec.json.decode(body)
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise BodyError(json_error(exc)) from None
    except RecursionError:
        raise BodyError("Malformed JSON: nested too deeply to read.") from None
    if not isinstance(document, dict):
        raise BodyError("Expected an ExportTraceServiceRequest JSON object.")
    spans = _hex_ids_to_base64(document)
    if spans > limit:
        raise TooManyRecords(limit=limit, setting=MAX_RECORDS_SETTING, what="spans")
    try:
        json_format.ParseDict(document, message, ignore_unknown_fields=True)
    except json_format.ParseError as exc:
        raise BodyError(f"Not an OTLP ExportTraceServiceRequest: {exc}") from None
    except RecursionError:
        raise BodyError("Not an OTLP ExportTraceServiceRequest: values nested too deeply.") from None
    return message


# --- OTLP/JSON without protobuf ------------------------------------------------------------------
#
# protobuf's json_format builds a request from JSON in pure Python, field by field: three quarters of an
# OTLP/JSON request's time (BENCHMARKS.md, "adapters"). These structs decode the same JSON in one pass of
# msgspec, under the attribute names of the protobuf messages, so `otlp_records` reads either alike.
# They cover the request as exporters write it (camelCase, hex ids); anything they refuse (snake_case
# names, enum names, a wrong type, bad hex) goes the protobuf way, which accepts or names the problem.


class _JsonKeyValueList(msgspec.Struct, rename="camel"):
    values: "list[_JsonKeyValue]" = []


class _JsonArrayValue(msgspec.Struct, rename="camel"):
    values: "list[_JsonAnyValue]" = []


class _JsonAnyValue(msgspec.Struct, rename="camel"):
    string_value: str | None = None
    bool_value: bool | None = None
    int_value: int | None = None
    double_value: float | None = None
    array_value: _JsonArrayValue | None = None
    kvlist_value: _JsonKeyValueList | None = None
    bytes_value: bytes | None = None  # base64 in JSON, as protobuf's mapping writes it

    def WhichOneof(self, _group: str) -> str | None:  # noqa: N802 (protobuf's name: _value calls both)
        for name in self.__struct_fields__:
            if getattr(self, name) is not None:
                return name
        return None


class _JsonKeyValue(msgspec.Struct, rename="camel"):
    key: str = ""
    value: _JsonAnyValue = msgspec.field(default_factory=_JsonAnyValue)


def _hex_id(value: str) -> bytes:
    return bytes.fromhex(value)  # a ValueError sends the request the protobuf way, which names it


class _JsonStatus(msgspec.Struct, rename="camel"):
    code: int = 0
    message: str = ""


class _JsonLink(msgspec.Struct, rename="camel"):
    trace_id: str = ""
    span_id: str = ""

    def __post_init__(self) -> None:
        _hex_id(self.trace_id)
        _hex_id(self.span_id)


NANOS = Annotated[int, msgspec.Meta(ge=0)]  # fixed64: a JSON number or a decimal string


class _JsonSpan(msgspec.Struct, rename="camel"):
    trace_id: Any = b""
    span_id: Any = b""
    parent_span_id: str = ""
    name: str = ""
    start_time_unix_nano: NANOS = 0
    end_time_unix_nano: NANOS = 0
    attributes: list[_JsonKeyValue] = []
    status: _JsonStatus = msgspec.field(default_factory=_JsonStatus)
    links: list[_JsonLink] = []

    def __post_init__(self) -> None:
        if not isinstance(self.trace_id, str) or not isinstance(self.span_id, str):
            raise ValueError("ids are hex strings")
        self.trace_id, self.span_id = _hex_id(self.trace_id), _hex_id(self.span_id)
        _hex_id(self.parent_span_id)


class _JsonScopeSpans(msgspec.Struct, rename="camel"):
    spans: list[_JsonSpan] = []


class _JsonResource(msgspec.Struct, rename="camel"):
    attributes: list[_JsonKeyValue] = []


class _JsonResourceSpans(msgspec.Struct, rename="camel"):
    resource: _JsonResource = msgspec.field(default_factory=_JsonResource)
    scope_spans: list[_JsonScopeSpans] = []


class _JsonRequest(msgspec.Struct, rename="camel"):
    resource_spans: list[_JsonResourceSpans] = []


# strict=False: protobuf's JSON mapping writes 64-bit integers as decimal strings.
_json_request_decoder = msgspec.json.Decoder(_JsonRequest, strict=False)


def _json_request(body: bytes) -> _JsonRequest | None:
    """The request decoded by msgspec, or None when the protobuf way must read it (see above). A body
    with no spans goes that way too: snake_case names would otherwise read as an empty request."""
    try:
        request = _json_request_decoder.decode(body)
    except (msgspec.ValidationError, msgspec.DecodeError, RecursionError, UnicodeDecodeError):
        return None
    if not any(scope.spans for rs in request.resource_spans for scope in rs.scope_spans):
        return None
    return request


MAX_RECORDS_SETTING = "LLMLOG_MAX_RECORDS_PER_REQUEST"
TRUNCATED = "The body is not an OTLP ExportTraceServiceRequest protobuf: truncated."
# Levels of messages in a request: request, resource spans, scope spans, span, attribute, value, and
# then values nested in arrays and key-value lists. protobuf stops at 100; GenAI messages need a few.
MAX_PROTOBUF_DEPTH = 32


def _field_tables(descriptor, tables: dict | None = None) -> dict:
    """{field number: the table of its message type} for every message field, through every type
    reachable from `descriptor` (AnyValue holds arrays of AnyValue: the tables share one dict each)."""
    tables = {} if tables is None else tables
    if descriptor.full_name in tables:
        return tables[descriptor.full_name]
    table: dict[int, dict] = {}
    tables[descriptor.full_name] = table
    for field_descriptor in descriptor.fields:
        if field_descriptor.message_type is not None:
            table[field_descriptor.number] = _field_tables(field_descriptor.message_type, tables)
    return table


_REQUEST_TABLE = _field_tables(ExportTraceServiceRequest.DESCRIPTOR)
_SPAN_TABLE = _REQUEST_TABLE[1][2][2]  # resource_spans (1) -> scope_spans (2) -> spans (2)


def count_protobuf_spans(body: bytes, *, limit: int) -> int:
    """The spans of a protobuf ExportTraceServiceRequest, counted on the wire before it is parsed.

    protobuf allocates every message of a body before a caller can look at it: 16 MB of empty spans
    or attributes (2 bytes each) is 8 million messages, gigabytes. So the wire format is walked
    first, message by message, with the request's own descriptors: TooManyRecords at the first span
    past `limit`, TooComplex past CONTAINERS_PER_RECORD messages per span at the cap, BodyError past
    MAX_PROTOBUF_DEPTH levels. Strings, bytes and scalars are skipped by their length, not read.
    """
    budget = max(MIN_CONTAINERS, limit * CONTAINERS_PER_RECORD)
    spans = messages = 0
    stack = [(0, len(body), _REQUEST_TABLE, 0)]
    try:
        while stack:
            pos, end, table, depth = stack.pop()
            while pos < end:
                tag = body[pos]
                pos += 1
                if tag & 0x80:
                    tag, pos = _varint(body, pos - 1)
                wire_type = tag & 7
                if wire_type == 2:
                    length = body[pos]
                    pos += 1
                    if length & 0x80:
                        length, pos = _varint(body, pos - 1)
                    if pos + length > end:
                        raise BodyError(TRUNCATED)
                    child = table.get(tag >> 3)
                    if child is not None:
                        messages += 1
                        if child is _SPAN_TABLE:
                            spans += 1
                        if spans > limit or messages > budget or depth >= MAX_PROTOBUF_DEPTH:
                            raise _limit_crossed(spans, limit=limit, messages=messages, budget=budget)
                        # Depth first: the rest of this message waits on the stack, which so never
                        # holds more than MAX_PROTOBUF_DEPTH entries (a million siblings would cost
                        # a million entries breadth first).
                        stack.append((pos + length, end, table, depth))
                        end, table, depth = pos + length, child, depth + 1
                        continue
                    pos += length
                elif wire_type == 0:
                    while body[pos] & 0x80:
                        pos += 1
                    pos += 1
                elif wire_type == 1:
                    pos += 8
                elif wire_type == 5:
                    pos += 4
                else:
                    raise BodyError(
                        f"The body is not an OTLP ExportTraceServiceRequest protobuf: wire type {wire_type}."
                    )
            if pos > end:
                raise BodyError(TRUNCATED)
    except IndexError:
        raise BodyError(TRUNCATED) from None
    return spans


def _limit_crossed(spans: int, *, limit: int, messages: int, budget: int) -> TooBig | BodyError:
    """Which bound of count_protobuf_spans the message just entered crosses, first of: the spans, the
    messages, the depth (called only then, so the walk checks all three in one condition)."""
    if spans > limit:
        return TooManyRecords(limit=limit, setting=MAX_RECORDS_SETTING, what="spans")
    if messages > budget:
        return TooComplex(
            f"The body holds over {budget} protobuf messages; at most "
            f"{CONTAINERS_PER_RECORD} per span at the cap are read in one request."
        )
    return BodyError(f"Values nested more than {MAX_PROTOBUF_DEPTH} levels deep.")


def _varint(body: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = body[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
        if shift > 63:
            raise BodyError("The body is not an OTLP ExportTraceServiceRequest protobuf: a varint too long.")


def _hex_ids_to_base64(document: dict) -> int:
    """OTLP/JSON writes trace and span ids as hex, where protobuf's JSON mapping expects base64.
    Returns the number of spans (counted before protobuf builds a message for each)."""
    spans = 0
    for r, resource_spans in enumerate(_list(document, "resourceSpans", "resource_spans")):
        for s, scope_spans in enumerate(_list(resource_spans, "scopeSpans", "scope_spans")):
            for n, span in enumerate(_list(scope_spans, "spans")):
                spans += 1
                where = f"resourceSpans[{r}].scopeSpans[{s}].spans[{n}]"
                if not isinstance(span, dict):
                    continue
                _convert_ids(span, where)
                for k, link in enumerate(_list(span, "links")):
                    if isinstance(link, dict):
                        _convert_ids(link, f"{where}.links[{k}]")
    return spans


def _list(container: Any, *names: str) -> list:
    if not isinstance(container, dict):
        return []
    for name in names:
        value = container.get(name)
        if isinstance(value, list):
            return value
    return []


def _convert_ids(span: dict, where: str) -> None:
    for name in ("traceId", "spanId", "parentSpanId", "trace_id", "span_id", "parent_span_id"):
        value = span.get(name)
        if not value:
            continue
        if not isinstance(value, str):
            raise BodyError(f"{where}.{name}: expected a hex string, got {type(value).__name__}.")
        try:
            span[name] = base64.b64encode(bytes.fromhex(value)).decode()
        except ValueError:
            raise BodyError(f"{where}.{name}: {value!r} is not hex.") from None


def encode(message, content_type: str) -> bytes:
    if content_type == PROTOBUF:
        return message.SerializeToString()
    return json_format.MessageToJson(message, indent=None).encode()
