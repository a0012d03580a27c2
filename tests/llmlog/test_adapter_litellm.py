"""POST /api/ingest/litellm/: LiteLLM's GenericAPILogger records, stored once each.

The first tests drive the real `litellm` package (mock_response completions, no network) and its
GenericAPILogger against the running app; the rest post StandardLoggingPayload-shaped bodies directly.
"""

import asyncio
import gzip
import hashlib
import json
import os
import socket
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from django.test import override_settings

from core.money import quantize_money
from llmlog.models import AccountingStatus, LLMUsage, ModelPrice
from llmlog.pricing import TokenCounts, charge
from tests.conftest import bearer

pytestmark = pytest.mark.django_db
URL = "/api/ingest/litellm/"
KEY_HASH = hashlib.sha256(b"sk-litellm-virtual-key").hexdigest()


# --- the real LiteLLM, against the running app ----------------------------------------------------


def import_litellm():
    """litellm, set up never to reach the internet: its model cost map and Anthropic beta headers come
    from the copies in the package instead of GitHub (the only fetches it makes outside a proxy)."""
    os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
    os.environ["LITELLM_LOCAL_ANTHROPIC_BETA_HEADERS"] = "True"
    import litellm

    litellm.telemetry = False
    return litellm


@pytest.fixture
def no_internet(monkeypatch):
    """Every connection the test makes must stay on this machine; any other is recorded and refused."""
    attempts: list[Any] = []
    real_connect = socket.socket.connect

    def connect(sock, address):
        host = address[0] if isinstance(address, tuple) else address
        if isinstance(host, str) and (host.startswith("127.") or host in ("::1", "localhost")):
            return real_connect(sock, address)
        attempts.append(address)
        raise OSError(f"test: no network beyond loopback ({address!r})")

    monkeypatch.setattr(socket.socket, "connect", connect)
    yield attempts
    assert attempts == [], f"LiteLLM tried to reach the network: {attempts}"


GPT4O_SALE = {"input_price": Decimal("5"), "output_price": Decimal("15"), "cached_input_price": Decimal("2")}
CALLER = {
    "user_api_key_hash": KEY_HASH,
    "user_api_key_alias": "support-bot-key",
    "user_api_key_user_id": "u-42",
    "user_api_key_team_id": "team-support",
    "user_api_key_org_id": "acme",
    "user_api_key_end_user_id": "customer-7",
}
REASONING_RESPONSE = {
    "id": "chatcmpl-reasoning-1",
    "object": "chat.completion",
    "created": 1_790_000_000,
    "model": "gpt-4o",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "42"}, "finish_reason": "stop"}],
    "usage": {
        "prompt_tokens": 1000,
        "completion_tokens": 300,
        "total_tokens": 1300,
        "prompt_tokens_details": {"cached_tokens": 600},
        "completion_tokens_details": {"reasoning_tokens": 200},
    },
}


async def drive_litellm(litellm, *, endpoint: str, key: str, log_format: str) -> list[dict]:
    """Seven calls through LiteLLM; its GenericAPILogger posts them to llmlog. Returns what it queued."""
    from litellm.integrations.generic_api.generic_api_callback import GenericAPILogger

    logger = GenericAPILogger(
        endpoint=endpoint,
        headers={"Authorization": f"Bearer {key}"},
        log_format=log_format,
        batch_size=1000,  # flushed below, by hand, so that the test knows when
        flush_interval=3600,
    )
    litellm.callbacks = [logger]
    chat = [{"role": "user", "content": "What is the answer?"}]
    try:
        await litellm.acompletion(model="gpt-4o", messages=chat, mock_response="42", metadata=CALLER)
        await litellm.acompletion(model="gpt-4o", messages=chat, mock_response=REASONING_RESPONSE)
        stream = await litellm.acompletion(
            model="gpt-4o", messages=chat, mock_response="forty two", stream=True
        )
        async for _ in stream:
            pass
        await litellm.acompletion(model="gpt-4o-mini", messages=chat, mock_response="42")
        await litellm.acompletion(model="openai/acme-private-llm", messages=chat, mock_response="42")
        with pytest.raises(litellm.InternalServerError):
            await litellm.acompletion(model="gpt-4o", messages=chat, mock_response=Exception("boom"))
        with pytest.raises(litellm.RateLimitError):
            await litellm.acompletion(model="gpt-4o", messages=chat, mock_response="litellm.RateLimitError")

        deadline = time.monotonic() + 20  # success and failure logging run after the call returns
        while len(logger.log_queue) < 7 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        queued = [json.loads(json.dumps(record, default=str)) for record in logger.log_queue]
        assert len(queued) == 7, f"LiteLLM queued {len(queued)} records"

        # Its batching may deliver a record twice, in one batch and across batches.
        logger.log_queue.append(logger.log_queue[0])
        await logger.flush_queue()
        logger.log_queue.extend(queued)
        await logger.flush_queue()
        return queued
    finally:
        litellm.callbacks = []
        # Its keep-alive connections would hold the live server's threads, and their database
        # connections, past the test.
        await logger.async_httpx_client.close()


@pytest.mark.parametrize("log_format", ["json_array", "ndjson", "single"])
def test_litellm_generic_logger_lands_every_call_once(
    transactional_db, live_server, make_key, no_internet, log_format
):
    litellm = import_litellm()
    # The platform's own gateway: its reported costs are taken as costs (an org key's are not, see
    # tests/llmlog/test_hostile_ingest.py); each record's org is the one LiteLLM authenticated.
    key = make_key(org="", role="admin", scopes=("ingest",))
    ModelPrice.objects.create(
        model_name="gpt-4o", kind="sale", effective_from=datetime(2020, 1, 1, tzinfo=UTC), **GPT4O_SALE
    )

    # In a thread of its own: another test's tooling (Playwright's sync API) may leave an event loop
    # running in this one, where asyncio.run refuses to start.
    with ThreadPoolExecutor(max_workers=1) as thread:
        queued = thread.submit(
            asyncio.run,
            drive_litellm(litellm, endpoint=f"{live_server.url}{URL}", key=key, log_format=log_format),
        ).result()

    assert LLMUsage.objects.count() == 7
    sent = {record["id"]: record for record in queued}
    stored = {usage.transno: usage for usage in LLMUsage.objects.all()}
    assert set(stored) == set(sent)
    by_kind = {}
    for transno, record in sent.items():
        usage = stored[transno]
        by_kind[_kind(record)] = (record, usage)
        # fields every record maps the same way
        assert usage.model_name == usage.llmid == record["model"]
        assert usage.provider_type == usage.provider == "openai"
        assert usage.use_time == datetime.fromtimestamp(record["startTime"], tz=UTC)
        assert usage.finish_seconds == pytest.approx(record["endTime"] - record["startTime"])
        assert usage.responsed_seconds == pytest.approx(record["completionStartTime"] - record["startTime"])
        # A platform key's record is in the org LiteLLM authenticated (none in these calls).
        assert usage.userorgid == (record["metadata"].get("user_api_key_org_id") or "")
        assert usage.taskid == record["trace_id"]
        assert usage.ioinfo["request"] == record["messages"]
        assert usage.metadata["source"] == "litellm"

    record, usage = by_kind["plain"]
    assert (usage.status, usage.code, usage.error_message, usage.is_stream) == ("success", None, "", False)
    assert (usage.input_tokens, usage.output_tokens, usage.total_tokens) == (10, 20, 30)
    assert (usage.token_key_hash, usage.token_name) == (KEY_HASH, "support-bot-key")
    assert (usage.userid, usage.group) == ("u-42", "team-support")
    assert usage.metadata["end_user"] == "customer-7"
    assert usage.cost == quantize_money(Decimal(str(record["response_cost"])))
    # gpt-4o has a sale price: the amount comes from the price book, not from LiteLLM's cost
    assert usage.amount == charge(ModelPrice.objects.get(), TokenCounts(input_tokens=10, output_tokens=20))
    assert usage.ioinfo["response"]["choices"][0]["message"]["content"] == "42"
    assert usage.accounting_status == AccountingStatus.PENDING

    record, usage = by_kind["reasoning"]
    assert (usage.input_tokens, usage.cached_tokens) == (1000, 600)
    assert (usage.output_tokens, usage.reasoning_tokens) == (300, 200)
    counts = TokenCounts(input_tokens=1000, output_tokens=300, cached_tokens=600, reasoning_tokens=200)
    assert usage.amount == charge(ModelPrice.objects.get(), counts) == Decimal("0.00770")
    assert usage.usages["prompt_tokens_details"]["cached_tokens"] == 600

    record, usage = by_kind["stream"]
    assert usage.is_stream is True
    assert 0 < usage.responsed_seconds <= usage.finish_seconds
    assert usage.output_tokens == record["completion_tokens"] > 0

    record, usage = by_kind["no sale price"]
    # priced by LiteLLM, not in llmlog's price book: charged at cost
    assert usage.cost == usage.amount == quantize_money(Decimal(str(record["response_cost"]))) > 0

    record, usage = by_kind["unpriced"]
    # neither LiteLLM nor llmlog knows a price: kept, unpriced, left to accounting (no_price)
    assert record["response_cost_failure_debug_info"] is not None
    assert usage.amount is None
    assert usage.cost == 0
    assert usage.accounting_status == AccountingStatus.PENDING

    record, usage = by_kind["exception"]
    assert (usage.status, usage.code) == ("failed", 500)
    assert "boom" in usage.error_message
    assert (usage.amount, usage.cost, usage.accounting_status) == (0, 0, AccountingStatus.SKIPPED)
    assert usage.ioinfo["response"] is None

    record, usage = by_kind["rate limit"]
    assert (usage.status, usage.code) == ("failed", 429)
    assert "RateLimitError" in usage.error_message


def _kind(record: dict) -> str:
    if record["status"] == "failure":
        return "rate limit" if record["error_information"]["error_code"] == "429" else "exception"
    if record["stream"]:
        return "stream"
    if record["model"] == "gpt-4o-mini":
        return "no sale price"
    if record["model"].endswith("acme-private-llm"):  # LiteLLM logs it without the provider prefix
        return "unpriced"
    return "reasoning" if record["id"] == REASONING_RESPONSE["id"] else "plain"


# --- the endpoint, with StandardLoggingPayload bodies ---------------------------------------------


def litellm_record(**overrides: Any) -> dict[str, Any]:
    """A StandardLoggingPayload as LiteLLM 1.106 logs a chat completion (the fields llmlog reads, and
    some it ignores)."""
    start = 1_790_000_000.25
    record = {
        "id": f"chatcmpl-{uuid.uuid4()}",
        "litellm_call_id": str(uuid.uuid4()),
        "trace_id": str(uuid.uuid4()),
        "call_type": "acompletion",
        "stream": False,
        "status": "success",
        "status_fields": {"llm_api_status": "success", "guardrail_status": "not_run"},
        "custom_llm_provider": "openai",
        "startTime": start,
        "endTime": start + 1.5,
        "completionStartTime": start + 0.4,
        "response_time": 1.5,
        "model": "gpt-4o",
        "model_id": "",
        "model_group": "",
        "api_base": "https://api.openai.com",
        "metadata": {**CALLER, "user_api_key_spend": 1.5, "usage_object": {"prompt_tokens": 100}},
        "cache_hit": None,
        "response_cost": 0.00125,
        "cost_breakdown": {"input_cost": 0.00025, "output_cost": 0.001, "total_cost": 0.00125},
        "total_tokens": 150,
        "prompt_tokens": 100,
        "completion_tokens": 50,
        "request_tags": ["prod"],
        "end_user": "customer-7",
        "requester_ip_address": "203.0.113.9",
        "messages": [{"role": "user", "content": "hello"}],
        "response": {"choices": [{"message": {"role": "assistant", "content": "hi"}}]},
        "error_str": None,
        "error_information": None,
        "model_parameters": {},
        "hidden_params": {"api_base": "https://api.openai.com"},
        "model_map_information": {"model_map_key": "gpt-4o", "model_map_value": None},
    }
    record.update(overrides)
    return record


def post(api, key: str | None, body: bytes | list | dict, **headers: Any):
    if key:
        headers.update(bearer(key))
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return api.post(URL, data=data, content_type="application/json", **headers)


def ndjson(records: list[dict]) -> bytes:
    return "\n".join(json.dumps(record) for record in records).encode()


def test_json_array_ndjson_and_single_record_bodies_are_accepted(api, platform_key):
    records = [litellm_record() for _ in range(5)]

    assert post(api, platform_key, records[:2]).status_code == 201
    assert post(api, platform_key, ndjson(records[2:4])).status_code == 201
    assert post(api, platform_key, records[4]).status_code == 201

    assert sorted(LLMUsage.objects.values_list("transno", flat=True)) == sorted(r["id"] for r in records)


def test_record_maps_field_by_field(api, platform_key):
    record = litellm_record(metadata={**CALLER, "user_api_key_request_route": "/chat/completions"})

    response = post(api, platform_key, [record])

    assert response.status_code == 201, response.content
    usage = LLMUsage.objects.get()
    assert usage.transno == record["id"]
    assert usage.use_time == datetime(2026, 9, 21, 14, 13, 20, 250000, tzinfo=UTC)
    assert (usage.responsed_seconds, usage.finish_seconds) == (pytest.approx(0.4), pytest.approx(1.5))
    assert (usage.model_name, usage.provider_type) == ("gpt-4o", "openai")
    assert (usage.input_tokens, usage.output_tokens, usage.total_tokens) == (100, 50, 150)
    assert (usage.cost, usage.amount) == (Decimal("0.00125"), Decimal("0.00125"))  # no sale price: at cost
    assert (usage.token_key_hash, usage.token_name, usage.userid) == (KEY_HASH, "support-bot-key", "u-42")
    assert (usage.group, usage.userorgid) == ("team-support", "acme")
    assert usage.endpoint == "/chat/completions"
    assert usage.request_ip == "203.0.113.9"
    assert usage.metadata == {"source": "litellm", "tags": ["prod"], "end_user": "customer-7"}
    assert usage.ioinfo == {
        "request": record["messages"],
        "response": record["response"],
        "truncated": False,
    }
    assert response.json()["items"] == [
        {"index": 0, "status": "created", "transno": record["id"], "id": str(usage.id)}
    ]


def test_same_record_twice_in_a_batch_and_again_later_is_stored_once(api, platform_key):
    record = litellm_record()

    first = post(api, platform_key, [record, litellm_record(), record])
    again = post(api, platform_key, [record])

    assert first.status_code == 201
    assert [item["status"] for item in first.json()["items"]] == ["created", "created", "duplicate"]
    assert again.status_code == 200
    assert again.json()["duplicates"] == 1
    assert LLMUsage.objects.filter(transno=record["id"]).count() == 1
    assert LLMUsage.objects.count() == 2


def test_cache_hit_replaying_a_response_id_is_a_record_of_its_own(api, platform_key):
    original = litellm_record()
    cache_hit = litellm_record(id=original["id"], cache_hit=True, response_cost=0.0)

    response = post(api, platform_key, [original, cache_hit])

    assert response.json()["created"] == 2
    replay = LLMUsage.objects.get(transno=cache_hit["litellm_call_id"])
    assert replay.metadata["response_id"] == original["id"]


def test_an_unmappable_record_is_reported_and_the_rest_are_stored(api, platform_key):
    records = [
        litellm_record(),
        litellm_record(prompt_tokens="ten"),
        litellm_record(metadata={"user_api_key_user_id": "u" * 65}),
        litellm_record(startTime=None),
        litellm_record(),
    ]

    response = post(api, platform_key, records)

    assert response.status_code == 207
    body = response.json()
    assert (body["created"], body["errors"]) == (2, 3)
    items = body["items"]
    assert items[1]["errors"] == {"prompt_tokens": "Expected `int | null`, got `str`"}
    assert "metadata.user_api_key_user_id" in items[2]["errors"]
    assert "startTime" in items[3]["errors"]
    assert LLMUsage.objects.count() == 2


def test_token_counts_that_break_the_convention_name_litellms_field(api, platform_key):
    record = litellm_record(
        metadata={"usage_object": {"completion_tokens_details": {"reasoning_tokens": 999}}}
    )

    response = post(api, platform_key, [record])

    assert response.status_code == 400
    errors = response.json()["items"][0]["errors"]
    assert "metadata.usage_object.completion_tokens_details.reasoning_tokens" in errors


def test_malformed_json_is_400_with_a_message(api, platform_key):
    response = post(api, platform_key, b'[{"id": "x", ')

    assert response.status_code == 400
    assert "Malformed JSON" in response.json()["detail"]


def test_malformed_ndjson_line_is_reported_and_the_other_lines_are_kept(api, platform_key):
    body = ndjson([litellm_record()]) + b"\n{not json\n" + ndjson([litellm_record()])

    response = post(api, platform_key, body)

    assert response.status_code == 207
    assert "line 2" in response.json()["items"][1]["errors"]["non_field_errors"]
    assert LLMUsage.objects.count() == 2


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"id": "x", "model": "gpt-4o", "startTime": "yesterday"}, "startTime"),
        ({"id": "x", "model": "gpt-4o", "startTime": 1.0, "metadata": []}, "metadata"),
        ({"id": "x", "model": "gpt-4o", "startTime": 1.0, "status": "maybe"}, "status"),
        ({"id": "x", "model": 5, "startTime": 1.0}, "model"),
        ({"model": "gpt-4o", "startTime": 1.0}, "id"),
        ({"id": "x", "model": "gpt-4o", "startTime": 1e300}, "startTime"),
        (
            {"id": "x", "model": "gpt-4o", "startTime": 1.0, "requester_ip_address": "nowhere"},
            "requester_ip_address",
        ),
        ({"id": "x", "model": "gpt-4o", "startTime": 1.0, "response_cost": -1}, "response_cost"),
    ],
)
def test_wrong_types_are_400_naming_the_field(api, platform_key, body, field):
    response = post(api, platform_key, body)

    assert response.status_code == 400, response.content
    assert field in response.json()["items"][0]["errors"]


def test_org_key_cannot_ingest_another_orgs_records(api, acme_key):
    response = post(api, acme_key, [litellm_record(metadata={"user_api_key_org_id": "globex"})])

    assert response.status_code == 400
    assert "metadata.user_api_key_org_id" in response.json()["items"][0]["errors"]


def test_sale_price_makes_the_amount_and_litellms_cost_stays_the_cost(api, platform_key):
    ModelPrice.objects.create(
        model_name="gpt-4o", kind="sale", effective_from=datetime(2020, 1, 1, tzinfo=UTC), **GPT4O_SALE
    )

    post(api, platform_key, [litellm_record()])

    usage = LLMUsage.objects.get()
    assert usage.cost == Decimal("0.00125")
    assert usage.amount == Decimal("0.00125")  # 100 in at 5/M + 50 out at 15/M
    assert usage.price["sale"]["input_price"] == "5.00000"


def test_a_batch_of_512_records_of_11_kb_is_accepted(api, platform_key):
    padding = "x" * 10_000
    records = [litellm_record(messages=[{"role": "user", "content": padding}]) for _ in range(512)]
    body = json.dumps(records).encode()
    assert len(body) > 512 * 10_000

    response = post(api, platform_key, body)

    assert response.status_code == 201, response.content[:500]
    assert response.json()["created"] == 512
    assert LLMUsage.objects.count() == 512
    assert LLMUsage.objects.filter(ioinfo__truncated=True).count() == 512  # cut to LLMLOG_IO_LIMIT


def test_body_over_the_limit_is_413_with_a_message(api, platform_key):
    with override_settings(LLMLOG_ADAPTER_MAX_BODY_BYTES=100_000):
        response = post(api, platform_key, json.dumps([litellm_record()] * 200).encode())

    assert response.status_code == 413
    assert "at most 100000 bytes" in response.json()["detail"]
    assert not LLMUsage.objects.exists()


def test_gzip_body_is_accepted(api, platform_key):
    response = post(
        api, platform_key, gzip.compress(ndjson([litellm_record()])), HTTP_CONTENT_ENCODING="gzip"
    )

    assert response.status_code == 201
    assert LLMUsage.objects.count() == 1


def test_gzip_bomb_is_413(api, platform_key):
    with override_settings(LLMLOG_ADAPTER_MAX_BODY_BYTES=100_000):
        response = post(api, platform_key, gzip.compress(b" " * 1_000_000), HTTP_CONTENT_ENCODING="gzip")

    assert response.status_code == 413


def test_needs_an_ingest_key(api, acme_reader_key):
    assert post(api, None, [litellm_record()]).status_code == 401
    assert post(api, acme_reader_key, [litellm_record()]).status_code == 403
    assert not LLMUsage.objects.exists()


def test_concurrent_resends_of_a_record_store_it_once(transactional_db, live_server, platform_key):
    """LiteLLM's `single` format posts a batch's records in parallel, the same record possibly twice."""
    import urllib.request

    body = json.dumps(litellm_record()).encode()

    def send(_: int) -> int:
        request = urllib.request.Request(
            f"{live_server.url}{URL}",
            data=body,
            headers={"Authorization": f"Bearer {platform_key}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status
        except urllib.error.HTTPError as exc:
            return exc.code

    for _ in range(3):
        with ThreadPoolExecutor(max_workers=8) as pool:
            codes = list(pool.map(send, range(8)))
        assert set(codes) <= {200, 201}, codes

    assert LLMUsage.objects.count() == 1


def test_hostile_records_are_reported_never_a_500(api, platform_key):
    record = json.dumps(litellm_record()).encode()
    nul = json.dumps(litellm_record(metadata={"user_api_key_alias": "a\u0000b"})).encode()
    bad_utf8 = json.dumps(litellm_record()).encode().replace(b'"hello"', b'"\xff\xfe"')
    deep = b"[" * 100_000 + b"]" * 100_000
    nested = record[:-1] + b', "messages": ' + deep + b"}"

    response = post(api, platform_key, b"[" + b",".join([record, nul, bad_utf8]) + b"]")
    too_deep = post(api, platform_key, b"[" + record + b"," + nested + b"]")

    assert response.status_code == 207, response.content[:300]
    assert [item["status"] for item in response.json()["items"]] == ["created", "error", "error"]
    assert "metadata.user_api_key_alias" in response.json()["items"][1]["errors"]
    assert too_deep.status_code == 400
    assert "nested too deeply" in too_deep.json()["detail"]
    assert LLMUsage.objects.count() == 1
