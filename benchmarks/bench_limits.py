"""Request limits: the worst request at each cap, and hostile bodies, against one gunicorn worker.

    python benchmarks/bench_limits.py

For each case a fresh gunicorn (one gthread worker, production's config) serves the app on the
benchmark database; the worker answers one small native record first (loading the app, its connections
and caches), then a second (the baseline), then the case's body. Figures: the wall time of the case's
request, and the worker's peak RSS growth (VmHWM after the case minus VmHWM before it, from
/proc/<pid>/status). The baseline beside each, measured in the same run on the same worker, is that one
native record on the warm worker. The bound (issue 14): no request at the caps costs a worker more than
256 MB or takes more than 10 s.
"""

import gzip
import http.client
import json
import os
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.processes import free_port, start_app_server, stop_app_server  # noqa: E402
from benchmarks.startup import setup_django  # noqa: E402

PORT = free_port()
START = 1_763_600_000
CAP = 10_000  # LLMLOG_MAX_RECORDS_PER_REQUEST's default
NATIVE_CAP = 1000
MAX_MB, MAX_SECONDS = 256, 10.0


def litellm_record(i: int) -> dict:
    return {
        "id": f"bench-limits-{uuid.uuid4()}",
        "call_type": "acompletion",
        "status": "success",
        "custom_llm_provider": "openai",
        "startTime": START + i % 86_400,
        "endTime": START + i % 86_400 + 1.5,
        "model": "gpt-4o",
        "metadata": {"user_api_key_user_id": f"u-{i % 50}", "usage_object": {"prompt_tokens": 100}},
        "prompt_tokens": 100,
        "completion_tokens": 50,
        "messages": [{"role": "user", "content": "hello " * 100}],
        "response": {"choices": [{"message": {"role": "assistant", "content": "hi " * 100}}]},
        "hidden_params": {"api_base": "https://api.openai.com"},
    }


def native_record(i: int) -> dict:
    return {
        "transno": f"bench-limits-{uuid.uuid4()}",
        "use_time": START + i % 86_400,
        "model_name": "gpt-4o",
        "input_tokens": 1000,
        "output_tokens": 200,
        "ioinfo": {"request": "x" * 2000, "response": "y" * 2000},
    }


def otlp_spans(count: int, *, empty_attributes: int = 0) -> bytes:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue

    request = ExportTraceServiceRequest()
    scope = request.resource_spans.add().scope_spans.add()
    for n in range(count):
        span = scope.spans.add(
            trace_id=os.urandom(16),
            span_id=os.urandom(8),
            name="chat gpt-4o",
            start_time_unix_nano=(START + n % 86_400) * 10**9,
            end_time_unix_nano=(START + n % 86_400 + 1) * 10**9,
        )
        for key, value in (
            ("gen_ai.request.model", AnyValue(string_value="gpt-4o")),
            ("gen_ai.provider.name", AnyValue(string_value="openai")),
            ("gen_ai.usage.input_tokens", AnyValue(int_value=100)),
            ("gen_ai.usage.output_tokens", AnyValue(int_value=50)),
            ("gen_ai.input.messages", AnyValue(string_value="hello " * 100)),
        ):
            span.attributes.add(key=key, value=value)
        for _ in range(empty_attributes):
            span.attributes.add()
    return request.SerializeToString()


def nest(field: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field: tag, length, payload."""
    from google.protobuf.internal.encoder import _VarintBytes

    return bytes([(field << 3) | 2]) + _VarintBytes(len(payload)) + payload


JSON = {"Content-Type": "application/json"}
GZIP = {"Content-Encoding": "gzip"}
Case = tuple[str, str, bytes, dict[str, str]]


def cases() -> list[Case]:
    """(name, path, body, headers): the worst at each cap, then the hostile bodies of issue 14."""
    return worst_cases() + hostile_cases()


def worst_cases() -> list[Case]:
    js, gz = JSON, GZIP
    litellm = [litellm_record(i) for i in range(CAP)]
    ndjson = "\n".join(json.dumps(r) for r in [litellm_record(i) for i in range(CAP)]).encode()
    return [
        (
            "LiteLLM, 10,000 records, gzip JSON array",
            "/api/ingest/litellm/",
            gzip.compress(json.dumps(litellm).encode()),
            {**js, **gz},
        ),
        ("LiteLLM, 10,000 records, gzip NDJSON", "/api/ingest/litellm/", gzip.compress(ndjson), {**js, **gz}),
        (
            "OTLP, 10,000 spans, protobuf",
            "/v1/traces",
            otlp_spans(CAP),
            {"Content-Type": "application/x-protobuf"},
        ),
        (
            "native bulk, 1,000 records",
            "/api/llmusage/",
            json.dumps([native_record(i) for i in range(NATIVE_CAP)]).encode(),
            js,
        ),
    ]


def hostile_cases() -> list[Case]:
    js, gz = JSON, GZIP
    return [
        (
            "hostile: LiteLLM 270,000 records (gzip, 16 MB inflated)",
            "/api/ingest/litellm/",
            gzip.compress(b"[" + b",".join([b'{"id":"x","model":"m","startTime":1}'] * 270_000) + b"]"),
            {**js, **gz},
        ),
        (
            "hostile: gzip NDJSON of 8M garbage lines",
            "/api/ingest/litellm/",
            gzip.compress(b"x\n" * 8_000_000),
            {**js, **gz},
        ),
        (
            "hostile: gzip protobuf, 1 span with 8M empty attributes",
            "/v1/traces",
            gzip.compress(otlp_spans(1, empty_attributes=7_000_000)),
            {"Content-Type": "application/x-protobuf", **gz},
        ),
        (
            "hostile: gzip protobuf, 8M empty spans",
            "/v1/traces",
            gzip.compress(nest(1, nest(2, b"\x12\x00" * 8_000_000))),
            {"Content-Type": "application/x-protobuf", **gz},
        ),
        (
            "hostile: OTLP JSON of 5M empty arrays",
            "/v1/traces",
            gzip.compress(b'{"resourceSpans":[' + b",".join([b"[]"] * 5_000_000) + b"]}"),
            {**js, **gz},
        ),
        (
            "hostile: native, 8 MB of nested arrays in ioinfo",
            "/api/llmusage/",
            b'{"model_name":"m","ioinfo":{"request":[' + b",".join([b"[]"] * 2_600_000) + b"]}}",
            js,
        ),
    ]


def worker_pid(master: int) -> int:
    for _ in range(100):
        children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
        if children:
            return int(children[0])
        time.sleep(0.1)
    raise RuntimeError("no gunicorn worker")


def vm_hwm_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM")


def post(path: str, body: bytes, headers: dict[str, str], key: str) -> tuple[int, float, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", PORT, timeout=300)
    started = time.perf_counter()
    connection.request("POST", path, body=body, headers={**headers, "Authorization": f"Bearer {key}"})
    response = connection.getresponse()
    payload = response.read()
    return response.status, time.perf_counter() - started, payload


def main() -> None:
    setup_django()
    from llmlog.keys import api_key_create

    _, key = api_key_create(name="bench-limits", role="admin", scopes=["ingest"])
    warm = json.dumps(native_record(0)).encode()
    rows = []
    for name, path, body, headers in cases():
        server = start_app_server(port=PORT, workers=1, threads=1)
        try:
            pid = worker_pid(server.pid)
            base_status, base_seconds, _ = post(
                "/api/llmusage/", warm, {"Content-Type": "application/json"}, key
            )
            before = vm_hwm_mb(pid)
            status, seconds, payload = post(path, body, headers, key)
            growth = vm_hwm_mb(pid) - before
        finally:
            stop_app_server(server)
        ok = growth <= MAX_MB and seconds <= MAX_SECONDS
        rows.append((name, len(body), status, seconds, growth, base_seconds, ok, payload[:80]))
        print(
            f"{name}: {status} in {seconds:.2f} s, +{growth:.1f} MB (baseline {base_seconds * 1000:.0f} ms)"
        )
    print()
    print(
        "| request | body sent | answer | wall time | worker peak RSS growth "
        "| baseline: 1 native record, warm | within 10 s / 256 MB |"
    )
    print("|---|---|---|---|---|---|---|")
    for name, size, status, seconds, growth, base_seconds, ok, _ in rows:
        print(
            f"| {name} | {size / 1e6:.2f} MB | {status} | {seconds:.2f} s | {growth:.1f} MB | "
            f"{base_seconds * 1000:.0f} ms | {'yes' if ok else '**no**'} |"
        )


if __name__ == "__main__":
    main()
