"""CPU per record of the gateway adapters beside the native bulk ingest, in-process.

    python benchmarks/bench_adapter_cpu.py [--repeat 15]

The bodies are bench_adapters.py's: 1000 native records, 512 LiteLLM StandardLoggingPayload records
(about 3 KB each), 512 OTLP/JSON spans. Each body goes through what its view runs, as plain calls (no
HTTP, no key look-up): the body split and decoded, mapped onto the native record (the adapters), the
rules, pricing and row values, the COPY into llmusage (in a transaction rolled back, so the same
body serves every round), and the answer encoded. Two figures per format, in µs per record:

- map: the body to records (native: split, stated fields, decode; LiteLLM and OTLP: split, decode, map);
- request: all of it, the write and the answer included.

A fourth line sends LiteLLM's records, as the adapter maps them, to the native ingest: the difference
from native bulk is what those records carry (about 2 KB of prompt and answer kept as ioinfo, the raw
usage object, the caller's address), the difference from LiteLLM what the adapter itself adds.

Time is this process's CPU time (time.process_time), the best of --repeat rounds: the database's own
work is not counted, and a machine busy with other work moves it far less than wall-clock time (which
is what bench_adapters.py measures end to end, over HTTP). The ratio is native µs / adapter µs: the
share of native bulk speed the adapter's Python would reach if nothing else counted.

On a busy machine CPU time still moves by a quarter between runs; instructions do not. One request's:

    valgrind --tool=callgrind --collect-atstart=no --toggle-collect=functools_reduce \
        python benchmarks/bench_adapter_cpu.py --once LiteLLM
"""

import argparse
import functools
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import msgspec

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.bench_adapters import (  # noqa: E402
    LITELLM_BATCH,
    NATIVE_BATCH,
    OTLP_BATCH,
    litellm_record,
    native_record,
    otlp_json,
    otlp_request,
)
from benchmarks.startup import setup_django  # noqa: E402


class Rollback(Exception):
    """Raised at the end of a measured request: nothing it wrote is kept."""


def best_cpu(fn: Callable[[], object], repeat: int) -> float:
    """The least CPU time of `repeat` calls, in seconds (after one call that warms caches and plans)."""
    fn()
    times = []
    for _ in range(repeat):
        started = time.process_time()
        fn()
        times.append(time.process_time() - started)
    return min(times)


def rolled_back(fn: Callable[[], object]) -> Callable[[], None]:
    from django.db import transaction

    def run() -> None:
        try:
            with transaction.atomic():
                fn()
                raise Rollback
        except Rollback:
            pass

    return run


def formats() -> dict[str, tuple[int, Callable[[], object], Callable[[], object]]]:
    """name -> (records, map, request) for each format."""
    from llmlog.adapters import litellm, otlp, otlp_wire
    from llmlog.adapters.common import ingest_gateway_records, summary
    from llmlog.api.renderers import JSONRenderer
    from llmlog.ingest.service import usage_ingest
    from llmlog.ingest.stated import stated_fields
    from llmlog.ingest.wire import decode_record, parse_body

    tag = f"cpu-{int(time.time())}"
    native_body = json.dumps([native_record(tag, i) for i in range(NATIVE_BATCH)]).encode()
    litellm_body = json.dumps([litellm_record(tag, i) for i in range(LITELLM_BATCH)]).encode()
    otlp_body = otlp_json(otlp_request(tag, 0, OTLP_BATCH))
    render = JSONRenderer().render

    # LiteLLM's records as the adapter maps them, sent as native records: what the records carry
    # (prompt and answer as ioinfo, the raw usage, the caller's address) costs the same both ways.
    mapped = litellm.litellm_records(litellm.parse_litellm_body(litellm_body))
    same_body = msgspec.json.encode(mapped)

    def native_map(body: bytes = native_body) -> object:
        items, _ = parse_body(body)
        return [(stated_fields(raw), decode_record(raw)) for raw in items]

    def native_request(body: bytes = native_body) -> None:
        render(summary(usage_ingest(body=body)))

    def litellm_map() -> object:
        return litellm.litellm_records(litellm.parse_litellm_body(litellm_body))

    def litellm_request() -> None:
        result = ingest_gateway_records(records=litellm_map(), org="", source_names=litellm.SOURCE_NAMES)
        render(summary(result))

    def otlp_map() -> otlp.SpanBatch:
        return otlp.otlp_records(otlp_wire.parse_otlp(otlp_body, otlp_wire.JSON))

    def otlp_request_() -> None:
        batch = otlp_map()
        result = ingest_gateway_records(records=batch.records, org="", source_names=otlp.SOURCE_NAMES)
        otlp_wire.encode(otlp.export_response(batch, result), otlp_wire.JSON)

    return {
        "native bulk": (NATIVE_BATCH, native_map, native_request),
        "native bulk, LiteLLM's records": (
            LITELLM_BATCH,
            lambda: native_map(same_body),
            lambda: native_request(same_body),
        ),
        "LiteLLM": (LITELLM_BATCH, litellm_map, litellm_request),
        "OTLP JSON": (OTLP_BATCH, otlp_map, otlp_request_),
    }


def count_once(name: str) -> None:
    """One request of the format, after two that warm it, called through functools.reduce: a C function
    nothing else calls once Django is set up, so callgrind counts the request's instructions alone
    (`--collect-atstart=no --toggle-collect=functools_reduce`). Load does not move the count."""
    found = formats()
    if name not in found:
        raise SystemExit(f"--once: one of {', '.join(map(repr, found))}")
    records, _, request = found[name]
    run = rolled_back(request)
    run()
    run()
    functools.reduce(lambda _, __: run(), [0], None)
    print(f"{name}: one request of {records} records")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeat", type=int, default=15, help="rounds per figure (the best is kept)")
    parser.add_argument(
        "--once",
        metavar="FORMAT",
        help="run one warm request of FORMAT (a line's name) inside functools.reduce, for callgrind",
    )
    args = parser.parse_args()
    setup_django()
    if args.once:
        count_once(args.once)
        return

    measured = {}
    for name, (records, map_, request) in formats().items():
        map_us = best_cpu(map_, args.repeat) / records * 1e6
        request_us = best_cpu(rolled_back(request), args.repeat) / records * 1e6
        measured[name] = (map_us, request_us)
    native_request = measured["native bulk"][1]
    print("| format | map µs/record | request µs/record | native / this (request) |")
    print("|---|---|---|---|")
    for name, (map_us, request_us) in measured.items():
        print(f"| {name} | {map_us:.1f} | {request_us:.1f} | {native_request / request_us:.2f} |")


if __name__ == "__main__":
    main()
