"""POST /v1/traces (and /api/ingest/otlp/v1/traces): OpenTelemetry GenAI spans as usage records.

The first test exports real spans with the OpenTelemetry SDK's OTLP/HTTP exporter into the running app;
the rest post OTLP bodies (encoded by the SDK's own encoder, or OTLP/JSON) directly.
"""

import gzip
import hashlib
import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import msgspec
import pytest
from google.rpc.status_pb2 import Status as RpcStatus
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Status, StatusCode

from llmlog.models import AccountingStatus, LLMUsage, ModelPrice
from llmlog.pricing import TokenCounts, charge
from tests.conftest import bearer

pytestmark = pytest.mark.django_db
URL = "/v1/traces"
PROTOBUF = "application/x-protobuf"
START_NS = 1_790_000_000_123_456_789
START = datetime(2026, 9, 21, 14, 13, 20, 123456, tzinfo=UTC)
KEY_HASH = hashlib.sha256(b"sk-litellm-virtual-key").hexdigest()

CHAT = {
    "gen_ai.operation.name": "chat",
    "gen_ai.provider.name": "openai",
    "gen_ai.request.model": "gpt-4o",
    "gen_ai.response.model": "gpt-4o-2024-08-06",
    "gen_ai.usage.input_tokens": 1000,
    "gen_ai.usage.output_tokens": 300,
    "gen_ai.usage.cache_read.input_tokens": 600,
    "gen_ai.usage.reasoning.output_tokens": 200,
    "gen_ai.request.stream": True,
    "gen_ai.response.time_to_first_chunk": 0.25,
    "gen_ai.conversation.id": "conv-1",
    "user.id": "u-42",
}
# What LiteLLM's `otel` callback sets (older conventions, its cost and its caller's metadata).
LITELLM_OTEL = {
    "gen_ai.system": "openai",
    "gen_ai.request.model": "gpt-4o-mini",
    "gen_ai.usage.prompt_tokens": 120,
    "gen_ai.usage.completion_tokens": 30,
    "gen_ai.cost.total_cost": 0.00042,
    "llm.is_streaming": "False",
    "metadata.user_api_key_hash": KEY_HASH,
    "metadata.user_api_key_alias": "support-bot-key",
    "metadata.user_api_key_user_id": "u-7",
    "metadata.user_api_key_team_id": "team-support",
    "metadata.user_api_key_org_id": "acme",
}
FAILED_CALL = {
    "gen_ai.system": "anthropic",
    "gen_ai.request.model": "claude-sonnet-4",
    "gen_ai.usage.input_tokens": 50,
    "error.type": "overloaded_error",
    "http.response.status_code": 529,
}
HTTP_SPAN = {"http.request.method": "GET", "url.path": "/health"}
TOOL_SPAN = {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "search"}


def make_spans(*specs: tuple[str, dict[str, Any]] | tuple[str, dict[str, Any], Status]) -> list[ReadableSpan]:
    """Spans recorded by the SDK, as an instrumented application would produce them."""
    recorder = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "support-bot"}))
    provider.add_span_processor(SimpleSpanProcessor(recorder))
    tracer = provider.get_tracer("tests")
    for offset, spec in enumerate(specs):
        name, attributes, *status = spec
        start = START_NS + offset * 1_000_000_000
        span = tracer.start_span(name, attributes=attributes, start_time=start)
        if status:
            span.set_status(status[0])
        span.end(end_time=start + 1_500_000_000)
    provider.shutdown()
    return list(recorder.get_finished_spans())


def transno(span: ReadableSpan) -> str:
    return f"{span.context.trace_id:032x}-{span.context.span_id:016x}"


def sale_price(model: str) -> ModelPrice:
    return ModelPrice.objects.create(
        model_name=model,
        kind="sale",
        effective_from=datetime(2020, 1, 1, tzinfo=UTC),
        input_price=Decimal("5"),
        output_price=Decimal("15"),
        cached_input_price=Decimal("2"),
    )


# --- the SDK's exporter, against the running app --------------------------------------------------


@pytest.mark.parametrize("path", ["/v1/traces", "/api/ingest/otlp/v1/traces"])
def test_sdk_exporter_spans_land_as_usage_records_once(transactional_db, live_server, make_key, path):
    # The platform's own collector: reported costs are costs (an org key's are not: test_hostile_ingest).
    key = make_key(org="", role="admin", scopes=("ingest",))
    price = sale_price("gpt-4o")
    spans = make_spans(
        ("chat gpt-4o", CHAT),
        ("litellm_request", LITELLM_OTEL),
        ("chat claude-sonnet-4", FAILED_CALL, Status(StatusCode.ERROR, "Overloaded")),
        ("GET /health", HTTP_SPAN),
        ("execute_tool search", TOOL_SPAN),
    )
    exporter = OTLPSpanExporter(
        endpoint=f"{live_server.url}{path}", headers={"Authorization": f"Bearer {key}"}
    )

    assert exporter.export(spans) == SpanExportResult.SUCCESS
    assert exporter.export(spans) == SpanExportResult.SUCCESS  # an exporter's retry
    exporter.shutdown()

    assert LLMUsage.objects.count() == 3
    chat, litellm_call, failed = (LLMUsage.objects.get(transno=transno(span)) for span in spans[:3])

    assert (chat.model_name, chat.llmid, chat.provider_type) == ("gpt-4o", "gpt-4o", "openai")
    assert chat.metadata == {
        "source": "otlp",
        "span_name": "chat gpt-4o",
        "operation": "chat",
        "response_model": "gpt-4o-2024-08-06",
    }
    assert chat.use_time == START
    assert (chat.finish_seconds, chat.responsed_seconds) == (1.5, 0.25)
    assert (chat.input_tokens, chat.cached_tokens, chat.output_tokens, chat.reasoning_tokens) == (
        1000,
        600,
        300,
        200,
    )
    assert chat.total_tokens == 1300
    # A platform key's span names its org by attribute; this one names none.
    assert (chat.is_stream, chat.status, chat.userid, chat.userorgid) == (True, "success", "u-42", "")
    assert (chat.taskid, chat.feature) == ("conv-1", "support-bot")
    counts = TokenCounts(input_tokens=1000, output_tokens=300, cached_tokens=600, reasoning_tokens=200)
    assert chat.amount == charge(price, counts) == Decimal("0.00770")  # from the price book
    assert chat.cost == 0  # no cost price, none reported
    assert chat.accounting_status == AccountingStatus.PENDING

    assert (litellm_call.model_name, litellm_call.provider_type) == ("gpt-4o-mini", "openai")
    assert (litellm_call.input_tokens, litellm_call.output_tokens, litellm_call.is_stream) == (120, 30, False)
    assert litellm_call.cost == litellm_call.amount == Decimal("0.00042")  # no sale price: at cost
    assert (litellm_call.token_key_hash, litellm_call.token_name) == (KEY_HASH, "support-bot-key")
    assert (litellm_call.userid, litellm_call.group, litellm_call.userorgid) == (
        "u-7",
        "team-support",
        "acme",
    )

    assert (failed.status, failed.code, failed.error_message) == ("failed", 529, "Overloaded")
    assert (failed.provider_type, failed.input_tokens, failed.output_tokens) == ("anthropic", 50, 0)
    assert (failed.amount, failed.cost, failed.accounting_status) == (0, 0, AccountingStatus.SKIPPED)


# --- the endpoint, with OTLP bodies ---------------------------------------------------------------


def post(api, key: str | None, body: bytes, content_type: str = PROTOBUF, path: str = URL, **headers: Any):
    if key:
        headers.update(bearer(key))
    return api.post(path, data=body, content_type=content_type, **headers)


def export_body(spans: list[ReadableSpan]) -> bytes:
    return encode_spans(spans).SerializeToString()


def test_answer_counts_ignored_spans_in_a_partial_success_message(api, platform_key):
    spans = make_spans(("chat", CHAT), ("GET /health", HTTP_SPAN), ("tool", TOOL_SPAN), ("GET /", HTTP_SPAN))

    response = post(api, platform_key, export_body(spans))

    assert response.status_code == 200
    assert response["Content-Type"] == PROTOBUF
    answer = ExportTraceServiceResponse.FromString(response.content)
    assert answer.partial_success.rejected_spans == 0
    message = answer.partial_success.error_message
    assert "stored 1 usage record(s)" in message
    assert "ignored 2 span(s) without gen_ai.* attributes and 1 gen_ai span(s) without a model" in message


def test_fully_accepted_export_answers_an_empty_response(api, platform_key):
    response = post(api, platform_key, export_body(make_spans(("chat", CHAT))))

    assert response.status_code == 200
    assert response.content == b""  # ExportTraceServiceResponse with nothing set
    assert LLMUsage.objects.count() == 1


def test_span_with_a_wrong_attribute_type_is_rejected_and_counted(api, platform_key):
    spans = make_spans(("chat", CHAT), ("bad", {**CHAT, "gen_ai.usage.input_tokens": "many"}))

    response = post(api, platform_key, export_body(spans))

    assert response.status_code == 200
    answer = ExportTraceServiceResponse.FromString(response.content)
    assert answer.partial_success.rejected_spans == 1
    assert (
        f"span {transno(spans[1])}: gen_ai.usage.input_tokens: Expected a non-negative integer, got 'many'"
        in (answer.partial_success.error_message)
    )
    assert LLMUsage.objects.count() == 1


def test_span_breaking_the_token_convention_is_rejected_naming_the_attribute(api, platform_key):
    spans = make_spans(("chat", {**CHAT, "gen_ai.usage.reasoning.output_tokens": 301}))

    answer = ExportTraceServiceResponse.FromString(post(api, platform_key, export_body(spans)).content)

    assert answer.partial_success.rejected_spans == 1
    assert "gen_ai.usage.reasoning.output_tokens: reasoning_tokens (301) exceed" in (
        answer.partial_success.error_message
    )


def test_span_with_token_counts_but_no_model_is_rejected(api, platform_key):
    spans = make_spans(("chat", {"gen_ai.usage.input_tokens": 5}))

    answer = ExportTraceServiceResponse.FromString(post(api, platform_key, export_body(spans)).content)

    assert answer.partial_success.rejected_spans == 1
    assert "gen_ai.request.model" in answer.partial_success.error_message


def test_same_span_again_is_stored_once_and_a_changed_one_is_rejected(api, platform_key):
    spans = make_spans(("chat", CHAT))
    post(api, platform_key, export_body(spans))

    again = ExportTraceServiceResponse.FromString(post(api, platform_key, export_body(spans)).content)
    changed = encode_spans(spans)
    attributes = changed.resource_spans[0].scope_spans[0].spans[0].attributes
    next(a for a in attributes if a.key == "gen_ai.usage.output_tokens").value.int_value = 301
    conflict = ExportTraceServiceResponse.FromString(
        post(api, platform_key, changed.SerializeToString()).content
    )

    assert again.partial_success.rejected_spans == 0
    assert conflict.partial_success.rejected_spans == 1
    assert "already recorded with a different payload" in conflict.partial_success.error_message
    assert LLMUsage.objects.get().output_tokens == 300


def otlp_json(**span_overrides: Any) -> dict[str, Any]:
    span = {
        "traceId": "5b8efff798038103d269b633813fc60c",
        "spanId": "eee19b7ec3c1b174",
        "name": "chat gpt-4o",
        "kind": 3,
        "startTimeUnixNano": str(START_NS),
        "endTimeUnixNano": str(START_NS + 2_000_000_000),
        "attributes": [
            {"key": "gen_ai.request.model", "value": {"stringValue": "gpt-4o"}},
            {"key": "gen_ai.provider.name", "value": {"stringValue": "openai"}},
            {"key": "gen_ai.usage.input_tokens", "value": {"intValue": "42"}},
            {"key": "gen_ai.usage.output_tokens", "value": {"intValue": 7}},
        ],
        "status": {"code": 2, "message": "rate limited"},
    }
    span.update(span_overrides)
    return {
        "resourceSpans": [
            {
                "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "checkout"}}]},
                "scopeSpans": [{"scope": {"name": "openllmetry"}, "spans": [span]}],
            }
        ]
    }


def test_otlp_json_body_is_accepted_and_answered_in_json(api, platform_key):
    response = post(api, platform_key, json.dumps(otlp_json()).encode(), content_type="application/json")

    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    assert response.json() == {}
    usage = LLMUsage.objects.get()
    assert usage.transno == "5b8efff798038103d269b633813fc60c-eee19b7ec3c1b174"
    assert (usage.input_tokens, usage.output_tokens, usage.finish_seconds) == (42, 7, 2.0)
    assert (usage.status, usage.error_message, usage.feature) == ("failed", "rate limited", "checkout")
    assert usage.use_time == START


def test_otlp_json_rejections_are_in_partial_success(api, platform_key):
    body = otlp_json()
    body["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["attributes"].append(
        {"key": "gen_ai.usage.cache_read.input_tokens", "value": {"doubleValue": 0.5}}
    )

    response = post(api, platform_key, json.dumps(body).encode(), content_type="application/json")

    assert response.status_code == 200
    partial = response.json()["partialSuccess"]
    assert partial["rejectedSpans"] == "1"  # int64 is a string in OTLP/JSON
    assert "gen_ai.usage.cache_read.input_tokens" in partial["errorMessage"]


@pytest.mark.parametrize(
    ("body", "content_type", "expected"),
    [
        (b"\xff\xff\xff not protobuf", PROTOBUF, "not an OTLP ExportTraceServiceRequest protobuf"),
        (b'{"resourceSpans": [', "application/json", "Malformed JSON"),
        (b"[1, 2]", "application/json", "Expected an ExportTraceServiceRequest JSON object"),
        (
            json.dumps(otlp_json(traceId="not-hex")).encode(),
            "application/json",
            "traceId: 'not-hex' is not hex",
        ),
        (json.dumps(otlp_json(startTimeUnixNano="soon")).encode(), "application/json", "startTimeUnixNano"),
        (json.dumps(otlp_json(attributes={"a": 1})).encode(), "application/json", "attributes"),
    ],
)
def test_bodies_that_do_not_parse_are_400_with_a_status_message(
    api, platform_key, body, content_type, expected
):
    response = post(api, platform_key, body, content_type=content_type)

    assert response.status_code == 400
    assert response["Content-Type"] == content_type
    if content_type == PROTOBUF:
        status = RpcStatus.FromString(response.content)
        message, code = status.message, status.code
    else:
        message, code = response.json()["message"], response.json()["code"]
    assert expected in message
    assert code == 3  # INVALID_ARGUMENT
    assert not LLMUsage.objects.exists()


def test_other_content_types_are_415(api, platform_key):
    response = post(api, platform_key, b"hello", content_type="text/plain")

    assert response.status_code == 415
    assert "application/x-protobuf" in response.json()["message"]


def test_gzip_body_is_accepted(api, platform_key):
    body = gzip.compress(export_body(make_spans(("chat", CHAT))))

    response = post(api, platform_key, body, HTTP_CONTENT_ENCODING="gzip")

    assert response.status_code == 200
    assert LLMUsage.objects.count() == 1


def test_needs_an_ingest_key_and_answers_with_a_status(api, acme_reader_key):
    body = export_body(make_spans(("chat", CHAT)))

    anonymous = post(api, None, body)
    reader = post(api, acme_reader_key, body)

    assert anonymous.status_code == 401
    assert RpcStatus.FromString(anonymous.content).code == 16  # UNAUTHENTICATED
    assert anonymous["WWW-Authenticate"].startswith("Bearer")
    assert reader.status_code == 403
    assert "ingest" in RpcStatus.FromString(reader.content).message
    assert not LLMUsage.objects.exists()


def test_org_key_pins_spans_to_its_org(api, globex_key):
    spans = make_spans(("chat", CHAT), ("litellm_request", LITELLM_OTEL))

    answer = ExportTraceServiceResponse.FromString(post(api, globex_key, export_body(spans)).content)

    assert LLMUsage.objects.get().userorgid == "globex"
    assert answer.partial_success.rejected_spans == 1  # the LiteLLM span says it belongs to acme
    assert "metadata.user_api_key_org_id" in answer.partial_success.error_message


def test_span_time_is_exact_to_the_microsecond(api, platform_key):
    post(api, platform_key, export_body(make_spans(("chat", CHAT))))

    assert LLMUsage.objects.get().use_time - START == timedelta(0)


def test_deeply_nested_json_is_400_never_a_500(api, platform_key):
    depth = 100_000
    deep = '{"kvlistValue": {"values": [{"key": "k", "value": ' * depth + "{}" + "}]}}" * depth
    body = json.dumps(otlp_json()).replace(
        '"attributes": [', '"attributes": [{"key": "deep", "value": ' + deep + "}, ", 1
    )

    response = post(api, platform_key, body.encode(), content_type="application/json")

    assert response.status_code == 400
    assert "nested too deeply" in response.json()["message"]


# --- OTLP/JSON read by msgspec, the protobuf way kept for what it does not cover ---------------------


def every_kind_of_value() -> dict[str, Any]:
    body = otlp_json(parentSpanId="0102030405060708")
    span = body["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    span["attributes"] += [
        {"key": "gen_ai.usage.cache_read.input_tokens", "value": {"intValue": "3"}},
        {"key": "gen_ai.response.time_to_first_chunk", "value": {"doubleValue": 0.25}},
        {"key": "gen_ai.request.stream", "value": {"boolValue": True}},
        {"key": "gen_ai.conversation.id", "value": {"stringValue": "conv-9"}},
        {"key": "user.id", "value": {"stringValue": "u-9"}},
        {
            "key": "gen_ai.input.messages",
            "value": {
                "arrayValue": {
                    "values": [
                        {
                            "kvlistValue": {
                                "values": [
                                    {"key": "role", "value": {"stringValue": "user"}},
                                    {
                                        "key": "parts",
                                        "value": {
                                            "arrayValue": {"values": [{"stringValue": "hi"}, {"intValue": 2}]}
                                        },
                                    },
                                    {"key": "blob", "value": {"bytesValue": "AQI="}},
                                ]
                            }
                        }
                    ]
                }
            },
        },
        {"key": "llmlog.amount", "value": {"stringValue": "0.12345"}},
    ]
    return body


def mapped(body: bytes) -> list:
    from llmlog.adapters import otlp, otlp_wire

    batch = otlp.otlp_records(otlp_wire.parse_otlp(body, otlp_wire.JSON))
    return [msgspec.to_builtins(record) for record in batch.records]


def test_otlp_json_maps_alike_through_msgspec_and_through_protobuf(monkeypatch):
    from llmlog.adapters import otlp_wire

    body = json.dumps(every_kind_of_value()).encode()
    assert isinstance(otlp_wire.parse_otlp(body, otlp_wire.JSON), otlp_wire._JsonRequest)  # the fast way
    fast = mapped(body)
    monkeypatch.setattr(otlp_wire, "_json_request", lambda body: None)

    slow = mapped(body)

    assert fast == slow
    assert fast[0]["ioinfo"]["request"] == [{"role": "user", "parts": ["hi", 2], "blob": "0102"}]
    assert (fast[0]["status"], fast[0]["cached_tokens"], fast[0]["is_stream"]) == ("failed", 3, True)


def test_otlp_json_in_snake_case_and_enum_names_still_parses_the_protobuf_way():
    from llmlog.adapters import otlp, otlp_wire

    body = otlp_json(status={"code": "STATUS_CODE_ERROR", "message": "boom"})
    snake = {"resource_spans": [{"scope_spans": body["resourceSpans"][0]["scopeSpans"]}]}

    for document in (body, snake):
        request = otlp_wire.parse_otlp(json.dumps(document).encode(), otlp_wire.JSON)
        assert not isinstance(request, otlp_wire._JsonRequest)
        (record,) = otlp.otlp_records(request).records
        assert (record.status, record.input_tokens) == ("failed", 42)
