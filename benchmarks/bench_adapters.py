"""Gateway adapters over HTTP (LiteLLM's logger, OTLP protobuf and JSON) beside the native bulk ingest.

    python benchmarks/bench_adapters.py --records 30000 [--rows 1000000]

Each figure pushes --records records through one endpoint, in the batches its gateway sends: LiteLLM's
GenericAPILogger posts JSON arrays of 512 StandardLoggingPayload records, the OpenTelemetry SDK's
BatchSpanProcessor exports 512 spans per request. Its ceiling is the native bulk ingest (1000-record
batches to /api/llmusage/) measured in the same run, whose own ceiling is psycopg COPY. The app runs under
gunicorn (gthread workers, keep-alive) on PostgreSQL, on a table of --rows rows; clients are threads with
one persistent connection each, as many as gunicorn workers. 30,000 records a measurement (as many as
bench_ingest's bulk figure: 30 to 60 requests, seconds of steady work) and three measurements a figure
give a stable rate; more only lengthen `make bench`.
"""

import argparse
import base64
import json
import sys
import time
import zlib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.bench_ingest import copy_ceiling, record  # noqa: E402
from benchmarks.data import ingest_setup  # noqa: E402
from benchmarks.processes import app_server, free_port, post_bodies  # noqa: E402
from benchmarks.report import Figure, markdown_table  # noqa: E402

PORT = free_port()
LITELLM_BATCH = 512  # GenericAPILogger's default batch_size
OTLP_BATCH = 512  # BatchSpanProcessor's default max_export_batch_size
NATIVE_BATCH = 1000
START = 1_763_600_000
OTLP_TRACE_MARK = b"\xbe\xbe\xbe\xbe"  # the benchmark's spans: transno LIKE 'bebebebe%'


# --- bodies, built before the clock starts ---------------------------------------------------------


def native_record(tag: str, i: int) -> dict:
    """bench_ingest's record on the adapters' day (START), without the username, ownerid and is_stream
    this figure has always been measured without: the same JSON, key for key."""
    native = record(f"n-{tag}", i)
    for name in ("username", "ownerid", "is_stream"):
        del native[name]
    native["use_time"] = START + i % 86_400
    return native


def litellm_record(tag: str, i: int) -> dict:
    """A StandardLoggingPayload as LiteLLM 1.106 logs a chat completion, about 3 KB of JSON: the fields
    llmlog maps and the ones it skips (model map, cost breakdown, hidden params)."""
    start = START + i % 86_400 + 0.25
    usage = {
        "prompt_tokens": 1000 + i % 700,
        "completion_tokens": 200 + i % 300,
        "total_tokens": 1200 + i % 700 + i % 300,
        "prompt_tokens_details": {"cached_tokens": 100, "audio_tokens": None},
        "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": None},
    }
    return {
        "id": f"chatcmpl-bench-{tag}-{i}",
        "litellm_call_id": f"call-{tag}-{i}",
        "trace_id": f"trace-{tag}-{i}",
        "session_id": "",
        "call_type": "acompletion",
        "stream": i % 2 == 0,
        "status": "success",
        "status_fields": {"llm_api_status": "success", "guardrail_status": "not_run"},
        "custom_llm_provider": "openai",
        "saved_cache_cost": 0.0,
        "startTime": start,
        "endTime": start + 2.1,
        "completionStartTime": start + 0.4,
        "response_time": 2.1,
        "model": "gpt-4o",
        "model_id": "",
        "model_group": "gpt-4o",
        "api_base": "https://api.openai.com",
        "metadata": litellm_metadata(i, usage),
        "cache_key": None,
        "response_cost": 0.00475,
        "cost_breakdown": {"input_cost": 0.00275, "output_cost": 0.002, "total_cost": 0.00475},
        "total_tokens": usage["total_tokens"],
        "prompt_tokens": usage["prompt_tokens"],
        "completion_tokens": usage["completion_tokens"],
        "request_tags": ["prod"],
        "end_user": None,
        "requester_ip_address": "203.0.113.9",
        "messages": [
            {"role": "system", "content": "You are a helpful support assistant for ACME. " * 4},
            {"role": "user", "content": f"Where is my order {i}? It was due yesterday."},
        ],
        "response": litellm_response(tag, i, usage),
        "error_str": None,
        "error_information": None,
        "model_parameters": {"temperature": 0.2, "max_tokens": 512},
        "hidden_params": {"model_id": None, "api_base": "https://api.openai.com", "response_cost": 0.00475},
        "model_map_information": litellm_model_map(),
    }


def litellm_metadata(i: int, usage: dict) -> dict:
    """The proxy's metadata of a StandardLoggingPayload: the key, team, org and user it was made with."""
    return {
        "user_api_key_hash": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
        "user_api_key_alias": "default",
        "user_api_key_spend": 12.5,
        "user_api_key_max_budget": None,
        "user_api_key_team_id": f"team-{i % 10}",
        "user_api_key_org_id": f"org-{i % 20:02d}",
        "user_api_key_user_id": f"user-{i % 500}",
        "user_api_key_end_user_id": None,
        "user_api_key_request_route": "/chat/completions",
        "spend_logs_metadata": None,
        "requester_ip_address": "203.0.113.9",
        "applied_guardrails": [],
        "usage_object": usage,
    }


def litellm_response(tag: str, i: int, usage: dict) -> dict:
    return {
        "id": f"chatcmpl-bench-{tag}-{i}",
        "object": "chat.completion",
        "model": "gpt-4o-2024-08-06",
        "choices": [
            {
                "index": 0,
                "finish_reason": "stop",
                "message": {"role": "assistant", "content": "Your order ships today. " * 8},
            }
        ],
        "usage": usage,
    }


def litellm_model_map() -> dict:
    return {
        "model_map_key": "gpt-4o",
        "model_map_value": {
            "key": "gpt-4o",
            "max_tokens": 16384,
            "max_input_tokens": 128000,
            "input_cost_per_token": 2.5e-06,
            "output_cost_per_token": 1e-05,
            "cache_read_input_token_cost": 1.25e-06,
            "litellm_provider": "openai",
            "mode": "chat",
            "supports_function_calling": True,
            "supports_vision": True,
        },
    }


def otlp_request(tag: str, first: int, count: int):
    """One OTLP export: `count` GenAI chat spans under one resource and scope, as the SDK batches them."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

    def attribute(key: str, value) -> KeyValue:
        if isinstance(value, str):
            return KeyValue(key=key, value=AnyValue(string_value=value))
        return KeyValue(key=key, value=AnyValue(int_value=value))

    request = ExportTraceServiceRequest()
    resource_spans = request.resource_spans.add()
    resource_spans.resource.attributes.append(attribute("service.name", "support-bot"))
    scope_spans = resource_spans.scope_spans.add()
    scope_spans.scope.name = "opentelemetry.instrumentation.openai"
    trace_prefix = OTLP_TRACE_MARK + zlib.crc32(tag.encode()).to_bytes(4, "big")
    for i in range(first, first + count):
        span = scope_spans.spans.add()
        span.trace_id = trace_prefix + i.to_bytes(8, "big")
        span.span_id = (i + 1).to_bytes(8, "big")
        span.name = "chat gpt-4o"
        span.kind = 3  # CLIENT
        span.start_time_unix_nano = (START + i % 86_400) * 1_000_000_000
        span.end_time_unix_nano = span.start_time_unix_nano + 2_100_000_000
        span.attributes.extend(
            [
                attribute("gen_ai.operation.name", "chat"),
                attribute("gen_ai.provider.name", "openai"),
                attribute("gen_ai.request.model", "gpt-4o"),
                attribute("gen_ai.response.model", "gpt-4o-2024-08-06"),
                attribute("gen_ai.usage.input_tokens", 1000 + i % 700),
                attribute("gen_ai.usage.output_tokens", 200 + i % 300),
                attribute("gen_ai.usage.cache_read.input_tokens", 100),
                attribute("user.id", f"user-{i % 500}"),
            ]
        )
    return request


def otlp_json(message) -> bytes:
    """OTLP/JSON: protobuf's JSON mapping with trace and span ids in hex."""
    from google.protobuf import json_format

    document = json_format.MessageToDict(message)
    for resource_spans in document["resourceSpans"]:
        for scope_spans in resource_spans["scopeSpans"]:
            for span in scope_spans["spans"]:
                for name in ("traceId", "spanId"):
                    span[name] = base64.b64decode(span[name]).hex()
    return json.dumps(document).encode()


def batches(count: int, size: int) -> list[tuple[int, int]]:
    return [(start, min(size, count - start)) for start in range(0, count, size)]


# --- the app over HTTP -----------------------------------------------------------------------------


def post_all(path: str, bodies: list[bytes], *, key: str, content_type: str, clients: int) -> float:
    """POST every body; seconds elapsed. An OTLP answer with a partial success counts as refused."""

    def refused(status: int, payload: bytes) -> bool:
        # OTLP: an empty protobuf answer, or {} in JSON, means every span was stored
        partial = payload if content_type == "application/x-protobuf" else b"partialSuccess" in payload
        return status not in (200, 201) or bool(partial)

    elapsed, _ = post_bodies(
        port=PORT,
        path=path,
        bodies=bodies,
        key=key,
        clients=clients,
        content_type=content_type,
        refused=refused,
    )
    return elapsed


def measure_once(*, tag: str, n: int, key: str, clients: int, figures: tuple[Figure, ...]) -> float:
    """One run through each endpoint: native bulk, LiteLLM, OTLP protobuf and JSON, `n` records each;
    appends each rate to its figure (native bulk's as the others' ceiling). The LiteLLM record's size."""
    native, litellm, otlp_pb, otlp_js = figures

    bodies = [
        json.dumps([native_record(tag, i) for i in range(s, s + c)]).encode()
        for s, c in batches(n, NATIVE_BATCH)
    ]
    native_rate = n / post_all(
        "/api/llmusage/", bodies, key=key, content_type="application/json", clients=clients
    )
    native.app.append(native_rate)

    bodies = [
        json.dumps([litellm_record(tag, i) for i in range(s, s + c)]).encode()
        for s, c in batches(n, LITELLM_BATCH)
    ]
    size = sum(map(len, bodies)) / n
    elapsed = post_all(
        "/api/ingest/litellm/", bodies, key=key, content_type="application/json", clients=clients
    )
    litellm.app.append(n / elapsed)
    litellm.ceiling.append(native_rate)

    messages = [otlp_request(f"pb-{tag}", s, c) for s, c in batches(n, OTLP_BATCH)]
    bodies = [message.SerializeToString() for message in messages]
    elapsed = post_all("/v1/traces", bodies, key=key, content_type="application/x-protobuf", clients=clients)
    otlp_pb.app.append(n / elapsed)
    otlp_pb.ceiling.append(native_rate)

    messages = [otlp_request(f"js-{tag}", s, c) for s, c in batches(n, OTLP_BATCH)]
    bodies = [otlp_json(message) for message in messages]
    elapsed = post_all("/v1/traces", bodies, key=key, content_type="application/json", clients=clients)
    otlp_js.app.append(n / elapsed)
    otlp_js.ceiling.append(native_rate)
    del bodies, messages
    return size


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--records", type=int, default=30_000, help="records through each endpoint per run")
    parser.add_argument("--rows", type=int, default=0, help="rows in llmusage before measuring (demo data)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2, help="gunicorn worker processes (= clients)")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    key, raw = ingest_setup(
        rows=args.rows,
        leftovers=("bench-", "raw-", "chatcmpl-bench-", "bebebebe"),
        key_name="bench-adapters",
        scopes=["ingest"],
    )
    from llmlog.models import LLMUsage

    n = args.records
    native = Figure(f"native bulk ingest, {NATIVE_BATCH}-record batches", "rows/s", note="ceiling: COPY")
    litellm = Figure(
        f"LiteLLM logger, {LITELLM_BATCH}-record JSON arrays", "rows/s", target=">= 0.50 of native bulk"
    )
    otlp_pb = Figure(f"OTLP protobuf, {OTLP_BATCH}-span exports", "rows/s", target=">= 0.50 of native bulk")
    otlp_js = Figure(f"OTLP JSON, {OTLP_BATCH}-span exports", "rows/s", note="ceiling: native bulk")
    for figure in (litellm, otlp_pb):
        figure.note = "ceiling: native bulk"
    figures = (native, litellm, otlp_pb, otlp_js)
    with raw, app_server(port=PORT, workers=args.workers):
        for rep in range(args.repeat):
            tag = f"{int(time.time())}-{rep}"
            native.ceiling.append(copy_ceiling(raw, f"copy-{tag}", n))
            size = measure_once(tag=tag, n=n, key=key, clients=args.workers, figures=figures)
            print(f"run {rep + 1}/{args.repeat} done ({size / 1024:.1f} KB per LiteLLM record)", flush=True)
    stored = LLMUsage.objects.filter(transno__startswith="chatcmpl-bench-").count()
    expected = n * args.repeat
    if stored != expected:
        raise SystemExit(f"LiteLLM records stored: {stored}, expected {expected}")
    print()
    print(markdown_table([native, litellm, otlp_pb, otlp_js]))


if __name__ == "__main__":
    main()
