"""Bounded requests: each ingest endpoint caps its records per request while it reads the body (a 413
naming the cap, nothing stored), an answer lists at most 100 item errors beside its counts, and a body
that is not text (invalid UTF-8, a lone surrogate, a NUL) is a 400, never a 500."""

import gzip
import json
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from llmlog.models import LLMUsage
from tests.conftest import bearer
from tests.factories import usage_payload
from tests.llmlog.test_adapter_litellm import litellm_record as full_litellm_record
from tests.llmlog.test_adapter_litellm import ndjson
from tests.llmlog.test_adapter_otlp import START_NS, otlp_json

pytestmark = pytest.mark.django_db
NATIVE, LITELLM, OTLP = "/api/llmusage/", "/api/ingest/litellm/", "/v1/traces"
PROTOBUF = "application/x-protobuf"
CAP = 5


@pytest.fixture
def cap(settings) -> int:
    settings.LLMLOG_MAX_RECORDS_PER_REQUEST = CAP
    settings.LLMLOG_BULK_MAX = CAP
    return CAP


def litellm_record(**overrides: Any) -> dict[str, Any]:
    """A LiteLLM record without a cost (who may state money is another file's subject)."""
    return full_litellm_record(**{"response_cost": None, **overrides})


def post(api, key: str, path: str, body: bytes, content_type: str = "application/json", **headers: Any):
    return api.post(path, data=body, content_type=content_type, **bearer(key), **headers)


def spans_protobuf(count: int, *, attributes: int = 0) -> bytes:
    request = ExportTraceServiceRequest()
    scope = request.resource_spans.add().scope_spans.add()
    for n in range(count):
        span = scope.spans.add(
            trace_id=bytes(15) + bytes([1]),
            span_id=n.to_bytes(8, "big"),
            name="chat gpt-4o",
            start_time_unix_nano=START_NS,
            end_time_unix_nano=START_NS + 10**9,
        )
        span.attributes.add(key="gen_ai.request.model", value=AnyValue(string_value="gpt-4o"))
        span.attributes.add(key="gen_ai.usage.input_tokens", value=AnyValue(int_value=10))
        for _ in range(attributes):
            span.attributes.add()
    return request.SerializeToString()


def spans_json(count: int) -> bytes:
    document = otlp_json()
    template = document["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    document["resourceSpans"][0]["scopeSpans"][0]["spans"] = [
        {**template, "spanId": f"{n + 1:016x}", "status": {}} for n in range(count)
    ]
    return json.dumps(document).encode()


# --- the cap, counted while the body is read ---------------------------------------------------------


def assert_cap_answer(response, setting: str = "LLMLOG_MAX_RECORDS_PER_REQUEST") -> None:
    assert response.status_code == 413, response.content
    body = response.json()
    assert body["setting"] == setting
    assert body["max_records"] == CAP
    assert f"At most {CAP} " in body["detail"] and setting in body["detail"]
    assert not LLMUsage.objects.exists()


@pytest.mark.parametrize("encoding", ["json_array", "ndjson", "gzip_ndjson"])
def test_litellm_one_record_past_the_cap_is_413_and_nothing_is_stored(api, platform_key, cap, encoding):
    records = [litellm_record() for _ in range(cap + 1)]
    body = json.dumps(records).encode() if encoding == "json_array" else ndjson(records)
    headers = {}
    if encoding == "gzip_ndjson":
        body, headers = gzip.compress(body), {"HTTP_CONTENT_ENCODING": "gzip"}

    assert_cap_answer(post(api, platform_key, LITELLM, body, **headers))


@pytest.mark.parametrize("encoding", ["json_array", "ndjson"])
def test_litellm_exactly_the_cap_is_stored(api, platform_key, cap, encoding):
    records = [litellm_record() for _ in range(cap)]
    body = json.dumps(records).encode() if encoding == "json_array" else ndjson(records)

    response = post(api, platform_key, LITELLM, body)

    assert response.status_code == 201, response.content
    assert response.json()["created"] == cap
    assert LLMUsage.objects.count() == cap


def test_ndjson_of_a_million_bad_lines_is_413_not_a_million_errors(api, platform_key, cap):
    """3 KB of gzip that inflates to lines of garbage once grew a worker to 2 GB of per-line errors."""
    body = gzip.compress(b"x\n" * 1_000_000)

    response = post(api, platform_key, LITELLM, body, HTTP_CONTENT_ENCODING="gzip")

    assert_cap_answer(response)


def test_json_array_of_non_objects_past_the_cap_is_413(api, platform_key, cap):
    assert_cap_answer(post(api, platform_key, LITELLM, json.dumps([1] * (cap + 1)).encode()))


def test_otlp_protobuf_one_span_past_the_cap_is_413_naming_it_in_a_status(api, platform_key, cap):
    from google.rpc.status_pb2 import Status

    response = post(api, platform_key, OTLP, spans_protobuf(cap + 1), content_type=PROTOBUF)

    assert response.status_code == 413
    status = Status.FromString(response.content)
    assert "LLMLOG_MAX_RECORDS_PER_REQUEST = 5" in status.message and "spans" in status.message
    assert not LLMUsage.objects.exists()


def test_otlp_json_one_span_past_the_cap_is_413(api, platform_key, cap):
    response = post(api, platform_key, OTLP, spans_json(cap + 1))

    assert response.status_code == 413
    assert "LLMLOG_MAX_RECORDS_PER_REQUEST = 5" in response.json()["message"]
    assert not LLMUsage.objects.exists()


@pytest.mark.parametrize("content_type", [PROTOBUF, "application/json"])
def test_otlp_exactly_the_cap_is_stored(api, platform_key, cap, content_type):
    body = spans_protobuf(cap) if content_type == PROTOBUF else spans_json(cap)

    response = post(api, platform_key, OTLP, body, content_type=content_type)

    assert response.status_code == 200, response.content
    assert LLMUsage.objects.count() == cap


def test_native_bulk_one_record_past_its_cap_is_413(api, platform_key, cap):
    body = json.dumps([usage_payload() for _ in range(cap + 1)]).encode()

    assert_cap_answer(post(api, platform_key, NATIVE, body), setting="LLMLOG_BULK_MAX")


def test_native_bulk_exactly_its_cap_is_stored(api, platform_key, cap):
    response = post(api, platform_key, NATIVE, json.dumps([usage_payload() for _ in range(cap)]).encode())

    assert response.status_code == 201
    assert LLMUsage.objects.count() == cap


def test_native_bulk_cap_stays_1000_whatever_the_adapter_cap(settings):
    assert settings.LLMLOG_BULK_MAX == 1000
    assert settings.LLMLOG_MAX_RECORDS_PER_REQUEST == 10_000


# --- bounded work per request ------------------------------------------------------------------------


def test_protobuf_span_with_a_flood_of_empty_attributes_is_413_before_it_is_parsed(api, platform_key, cap):
    """15 KB of gzip protobuf once made 8 million attribute messages (1.4 GB) before anything counted."""
    body = spans_protobuf(1, attributes=200_000)

    response = post(api, platform_key, OTLP, gzip.compress(body), PROTOBUF, HTTP_CONTENT_ENCODING="gzip")

    assert response.status_code == 413
    assert b"protobuf messages" in response.content
    assert not LLMUsage.objects.exists()


@pytest.mark.parametrize("path", [LITELLM, NATIVE])
def test_json_body_of_a_flood_of_tiny_containers_is_413_before_it_is_decoded(api, platform_key, path, cap):
    body = json.dumps([{**litellm_record(), "messages": [[]] * 200_000}]).encode()

    response = post(api, platform_key, path, body)

    assert response.status_code == 413
    assert "JSON objects and arrays" in response.json()["detail"]


def test_protobuf_nested_past_the_depth_bound_is_400(api, platform_key):
    request = ExportTraceServiceRequest.FromString(spans_protobuf(1))
    value = request.resource_spans[0].scope_spans[0].spans[0].attributes.add(key="deep").value
    for _ in range(40):
        value = value.array_value.values.add()
    value.string_value = "bottom"

    response = post(api, platform_key, OTLP, request.SerializeToString(), content_type=PROTOBUF)

    assert response.status_code == 400
    assert b"nested more than 32 levels" in response.content


# --- the answer: counts, and the first 100 item errors -----------------------------------------------


def test_litellm_answer_with_150_bad_records_lists_100_errors_and_counts_all(api, platform_key):
    records = [litellm_record(model=None) for _ in range(150)] + [litellm_record() for _ in range(3)]

    response = post(api, platform_key, LITELLM, json.dumps(records).encode())

    assert response.status_code == 207
    body = response.json()
    assert (body["received"], body["created"], body["errors"], body["errors_not_listed"]) == (153, 3, 150, 50)
    errors = [item for item in body["items"] if item["status"] == "error"]
    assert [item["index"] for item in errors] == list(range(100))
    assert [item["index"] for item in body["items"] if item["status"] == "created"] == [150, 151, 152]


def test_native_answer_with_150_bad_records_lists_100_errors_and_counts_all(api, platform_key):
    records = [usage_payload(input_tokens=-1) for _ in range(150)] + [usage_payload()]

    response = post(api, platform_key, NATIVE, json.dumps(records).encode())

    assert response.status_code == 207
    body = response.json()
    assert (body["received"], body["created"], body["errors"], body["errors_not_listed"]) == (151, 1, 150, 50)
    assert len(body["items"]) == 101
    assert body["items"][-1]["index"] == 150


def test_openapi_declares_the_answer_counts(api, platform_key):
    schema = api.get("/api/schema/?format=json").json()
    answer = schema["components"]["schemas"]["BulkIngestResponse"]

    assert {"received", "errors_not_listed"} <= set(answer["required"])


# --- text that is not text ---------------------------------------------------------------------------

INVALID_UTF8 = b"gpt-\xff\xfe"
LONE_SURROGATE = b"gpt-\\ud800"
NUL = b"gpt-\\u0000"
BAD_TEXT = [(INVALID_UTF8, "UTF-8"), (LONE_SURROGATE, "surrogate"), (NUL, "NUL")]


@pytest.mark.parametrize(
    ("bad", "words"), [(INVALID_UTF8, "UTF-8"), (LONE_SURROGATE, "surrogate"), (NUL, "NUL")]
)
def test_native_record_with_bad_text_is_400_naming_it(api, platform_key, bad, words):
    body = json.dumps(usage_payload(model_name="MODEL")).encode().replace(b"MODEL", bad)

    single = post(api, platform_key, NATIVE, body)
    bulk = post(api, platform_key, NATIVE, b"[" + body + b"]")

    assert single.status_code == 400
    assert words in json.dumps(single.json())
    assert bulk.status_code == 400
    assert words in json.dumps(bulk.json())
    assert not LLMUsage.objects.exists()


@pytest.mark.parametrize(
    ("bad", "words"), [(INVALID_UTF8, "UTF-8"), (LONE_SURROGATE, "surrogate"), (NUL, "NUL")]
)
@pytest.mark.parametrize("encoding", ["json_array", "ndjson"])
def test_litellm_record_with_bad_text_is_400_naming_it(api, platform_key, bad, words, encoding):
    records = [litellm_record(model="MODEL"), litellm_record(model="MODEL")]
    body = json.dumps(records).encode() if encoding == "json_array" else ndjson(records)

    response = post(api, platform_key, LITELLM, body.replace(b"MODEL", bad))

    assert response.status_code == 400, response.content
    assert words in json.dumps(response.json())
    assert not LLMUsage.objects.exists()


@pytest.mark.parametrize(("bad", "words"), [(INVALID_UTF8, "UTF-8"), (LONE_SURROGATE, "surrogate")])
def test_otlp_json_with_bad_text_is_400_naming_it(api, platform_key, bad, words):
    body = json.dumps(otlp_json(name="SPAN")).encode().replace(b"SPAN", bad)

    response = post(api, platform_key, OTLP, body)

    assert response.status_code == 400
    assert words in response.json()["message"]
    assert not LLMUsage.objects.exists()


def test_otlp_span_with_a_nul_is_rejected_naming_it_and_not_stored(api, platform_key):
    body = json.dumps(otlp_json(name="SPAN")).encode().replace(b"SPAN", NUL)

    response = post(api, platform_key, OTLP, body)

    assert response.status_code == 200  # OTLP/HTTP: a rejected span is a partial success
    assert response.json()["partialSuccess"]["rejectedSpans"] in (1, "1")
    assert "NUL" in response.json()["partialSuccess"]["errorMessage"]
    assert not LLMUsage.objects.exists()


@pytest.mark.parametrize("bad", ["ab\ud800", "a\x00b"])
def test_json_query_body_with_a_lone_surrogate_or_nul_is_400(api, platform_key, bad):
    body = json.dumps({"query": {"modelName": bad}})  # ensure_ascii: both travel as \u escapes

    response = api.post(
        "/api/llm-log/get-list", data=body, content_type="application/json", **bearer(platform_key)
    )

    assert response.status_code == 400
    assert "modelName" in response.content.decode()


@pytest.mark.parametrize("bad", ["ab\ud800", "a\x00b"])
def test_drf_json_parser_refuses_a_lone_surrogate_or_nul_naming_where(bad):
    from io import BytesIO

    from rest_framework.exceptions import ParseError

    from llmlog.api.parsers import JSONParser

    body = json.dumps({"query": {"names": ["ok", bad]}}).encode()
    with pytest.raises(ParseError, match=r"\$\.query\.names\[1\]"):
        JSONParser().parse(BytesIO(body), "application/json", {})
