"""Hostile ingest input: every malformed or oversized body is a 4xx naming the problem, never a 500, and
nothing is stored that should not be. Runs on both passes: SQLite accepts values (NUL, 2**64) that
PostgreSQL refuses, so these tests hold ingest's own validation to PostgreSQL's limits everywhere."""

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import msgspec
import pytest
from django.conf import settings
from django.db import connection
from django.test import override_settings
from django.utils import timezone
from hypothesis import HealthCheck, given
from hypothesis import settings as examples
from hypothesis import strategies as st

from llmlog.ingest import MAX_JSON_DEPTH, NUL_MESSAGE, UsageIn, json_problem
from llmlog.models import LLMUsage, ModelPrice
from tests.conftest import bearer, usage_payload

pytestmark = pytest.mark.django_db
URL = "/api/llmusage/"
BIG = 2**63 - 1


def post(api, key: str, payload: Any):
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return api.post(URL, data=body, content_type="application/json", **bearer(key))


def assert_refused(response, *, field: str | None = None, status: int = 400) -> dict:
    """A 4xx with a readable message (naming `field` when given) and nothing stored."""
    assert response.status_code == status, response.content[:500]
    body = response.json()
    if field is not None:
        named = set(body.get("errors") or {}) | {
            name for item in body.get("items", []) for name in item.get("errors") or {}
        }
        assert any(name == field or name.startswith(f"{field}.") for name in named), body
    else:
        assert body.get("detail"), body
    assert not LLMUsage.objects.exists()
    return body


def _text_fields() -> dict[str, int]:
    """Every plain text field of the ingest record and its length limit, read from the schema itself so
    a field added later is covered too."""
    fields = {}
    for field in msgspec.inspect.type_info(UsageIn).fields:
        types = getattr(field.type, "types", (field.type,))
        for kind in types:
            if isinstance(kind, msgspec.inspect.StrType) and kind.max_length is not None:
                fields[field.name] = kind.max_length
    return fields


TEXT_FIELDS = _text_fields()
# Text kept as sent (request_ip is parsed, token_key is hashed, never stored).
STORED_TEXT_FIELDS = sorted(set(TEXT_FIELDS) - {"request_ip", "token_key"})


def test_every_text_field_of_the_record_is_covered():
    assert {"transno", "model_name", "userid", "error_message", "endpoint", "token_key"} <= set(TEXT_FIELDS)


# --- size -----------------------------------------------------------------------------------------


@override_settings(DATA_UPLOAD_MAX_MEMORY_SIZE=4096)
def test_body_over_the_size_limit_is_413_and_stores_nothing(api, acme_key):
    payload = [usage_payload(ioinfo={"request": "x" * 100}) for _ in range(40)]

    response = post(api, acme_key, payload)

    body = assert_refused(response, status=413)
    assert "exceeded" in body["detail"]


@pytest.mark.parametrize("name", sorted(TEXT_FIELDS))
def test_text_one_over_its_limit_is_400_naming_the_field(api, acme_key, name):
    response = post(api, acme_key, usage_payload(**{name: "x" * (TEXT_FIELDS[name] + 1)}))

    body = assert_refused(response, field=name)
    assert str(TEXT_FIELDS[name]) in body["errors"][name]


@pytest.mark.parametrize("name", sorted(TEXT_FIELDS))
def test_megabyte_string_in_any_text_field_is_400_naming_it(api, acme_key, name):
    response = post(api, acme_key, usage_payload(**{name: "é" * 1_000_000}))

    assert_refused(response, field=name)


@pytest.mark.parametrize("name", STORED_TEXT_FIELDS)
def test_text_at_its_limit_is_stored_whole(api, platform_key, name):
    """The column holds what validation lets through (a mismatch would be a database error: a 500)."""
    value = "é" * TEXT_FIELDS[name]

    response = post(api, platform_key, usage_payload(**{name: value}))

    assert response.status_code == 201, response.content[:500]
    assert getattr(LLMUsage.objects.get(), name) == value


@pytest.mark.parametrize(
    ("name", "value"),
    [("metadata", {"note": "x" * 100_000}), ("usages", {"prompt_tokens": 1, "note": "x" * 100_000})],
)
def test_huge_json_field_is_400_naming_it(api, acme_key, name, value):
    response = post(api, acme_key, usage_payload(**{name: value}))

    body = assert_refused(response, field=name)
    assert "bytes" in body["errors"][name]


def test_huge_ioinfo_is_cut_to_the_limit_not_refused(api, acme_key):
    response = post(api, acme_key, usage_payload(ioinfo={"request": "x" * 1_000_000, "response": "y"}))

    assert response.status_code == 201
    ioinfo = LLMUsage.objects.get().ioinfo
    assert len(ioinfo["request"]) == settings.LLMLOG_IO_LIMIT
    assert ioinfo["truncated"] is True


# --- nesting --------------------------------------------------------------------------------------


def nested(levels: int) -> Any:
    """`levels` objects inside each other, innermost {"leaf": 1}."""
    value: Any = {"leaf": 1}
    for _ in range(levels - 1):
        value = {"a": value}
    return value


@pytest.mark.parametrize("name", ["metadata", "usages"])
def test_json_nested_past_the_bound_is_400_naming_the_field(api, acme_key, name):
    response = post(api, acme_key, usage_payload(**{name: nested(MAX_JSON_DEPTH + 1)}))

    body = assert_refused(response, field=name)
    assert "nested" in body["errors"][name].lower()


@pytest.mark.parametrize("name", ["metadata", "usages"])
def test_json_nested_to_the_bound_is_stored(api, acme_key, name):
    response = post(api, acme_key, usage_payload(**{name: nested(MAX_JSON_DEPTH)}))

    assert response.status_code == 201, response.content[:500]
    assert getattr(LLMUsage.objects.get(), name) == nested(MAX_JSON_DEPTH)


@pytest.mark.parametrize("side", ["request", "response"])
def test_ioinfo_nested_past_the_bound_is_kept_as_text(api, acme_key, side):
    """ioinfo is a copy of the LLM traffic, kept for reading: a side too deep to store as JSON is kept as
    its JSON text (as a side too long is cut), so the billable record is never refused for it."""
    value = nested(MAX_JSON_DEPTH + 1)

    response = post(api, acme_key, usage_payload(ioinfo={side: value}))

    assert response.status_code == 201, response.content[:500]
    stored = LLMUsage.objects.get().ioinfo[side]
    assert json.loads(stored) == value
    assert api.get(f"{URL}{response.json()['id']}/", **bearer(acme_key)).status_code == 200


@pytest.mark.parametrize("where", ["metadata", "usages", "ioinfo"])
def test_json_nested_past_what_the_parser_can_read_is_400(api, acme_key, where):
    deep = b"[" * 100_000 + b"]" * 100_000
    inner = b'{"request": ' + deep + b"}" if where == "ioinfo" else deep
    body = json.dumps(usage_payload()).encode()[:-1] + b', "' + where.encode() + b'": ' + inner + b"}"

    response = post(api, acme_key, body)

    assert response.status_code == 400
    assert "nested" in json.dumps(response.json()).lower()
    assert not LLMUsage.objects.exists()


def test_deep_list_as_the_whole_body_is_400(api, acme_key):
    response = post(api, acme_key, b"[" * 100_000 + b"]" * 100_000)

    assert_refused(response)


# --- characters PostgreSQL cannot store, and bytes that are not text -------------------------------


@pytest.mark.parametrize("name", STORED_TEXT_FIELDS)
def test_nul_in_a_text_field_is_400_naming_it(api, platform_key, name):
    value = "a\x00b" if name != "currency" else "US\x00"

    response = post(api, platform_key, usage_payload(**{name: value}))

    body = assert_refused(response, field=name)
    if name != "currency":  # currency's pattern refuses it first
        assert "NUL" in body["errors"][name]


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("metadata", {"tag": "a\x00b"}),
        ("metadata", {"a\x00b": "tag"}),
        ("metadata", {"list": [1, {"deep": "\x00"}]}),
        ("usages", {"prompt_tokens": 1, "model": "gpt\x00"}),
    ],
)
def test_nul_inside_a_json_field_is_400_naming_it(api, acme_key, name, value):
    response = post(api, acme_key, usage_payload(**{name: value}))

    body = assert_refused(response, field=name)
    assert "NUL" in body["errors"][name]


def test_nul_in_ioinfo_never_costs_the_record(api, acme_key):
    """Text keeps a U+FFFD where the NUL was; a JSON side is kept as its JSON text, NUL escaped."""
    reply = {"choices": [{"text": "ok\x00", "k\x00": 1}]}

    response = post(api, acme_key, usage_payload(ioinfo={"request": "say\x00hi", "response": reply}))

    assert response.status_code == 201, response.content[:500]
    stored = LLMUsage.objects.get().ioinfo
    assert stored["request"] == "say\ufffdhi"
    assert json.loads(stored["response"]) == reply


def test_invalid_utf8_is_400_naming_the_field(api, acme_key):
    body = json.dumps(usage_payload(userid="PLACEHOLDER")).encode().replace(b"PLACEHOLDER", b"\xff\xfe")

    response = post(api, acme_key, body)

    body = assert_refused(response, field="userid")
    assert "UTF-8" in body["errors"]["userid"]


def test_invalid_utf8_in_one_bulk_item_keeps_the_others(api, acme_key):
    good = json.dumps(usage_payload(transno="good")).encode()
    bad = json.dumps(usage_payload(transno="bad", username="PLACEHOLDER")).encode()
    body = b"[" + good + b"," + bad.replace(b"PLACEHOLDER", b"caf\xe9") + b"]"

    response = post(api, acme_key, body)

    assert response.status_code == 207
    assert response.json()["items"][1]["errors"] == {"username": "Not valid UTF-8."}
    assert list(LLMUsage.objects.values_list("transno", flat=True)) == ["good"]


@pytest.mark.parametrize("escaped", [r"\ud800", r"\udc80x", r"a\ud800\u0041"])
def test_lone_surrogate_is_400(api, acme_key, escaped):
    body = json.dumps(usage_payload(userid="PLACEHOLDER")).encode().replace(b"PLACEHOLDER", escaped.encode())

    assert_refused(post(api, acme_key, body))


def test_surrogate_pair_is_a_character_and_is_stored(api, acme_key):
    body = json.dumps(usage_payload(userid="PLACEHOLDER")).encode().replace(b"PLACEHOLDER", rb"\ud83d\ude00")

    assert post(api, acme_key, body).status_code == 201
    assert LLMUsage.objects.get().userid == "\U0001f600"


@pytest.mark.parametrize("body", [b'"text"', b"42", b"null", b"true", b'[1, "a"]', b"{}", b"\x00", b"\xff"])
def test_body_that_is_not_a_record_is_400(api, acme_key, body):
    response = post(api, acme_key, body)

    assert response.status_code == 400
    assert not LLMUsage.objects.exists()


# --- time -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "use_time",
    [
        "0001-01-01T00:00:00Z",
        "0001-01-01T00:00:00+23:59",  # before the smallest datetime once in UTC
        "1969-12-31T23:59:59Z",
        "1999-12-31T23:59:59Z",
        "9999-12-31T23:59:59Z",
        "9999-12-31T23:59:59-23:59",  # past the largest datetime once in UTC
        "2200-01-01T00:00:00Z",
        "9999-12-31T23:59:59",  # naive: read in TIME_ZONE
        0,
        1,
        946_684_799,  # 1999-12-31T23:59:59Z in seconds
        253_402_300_800_000,  # year 10000 in milliseconds
        10**30,
        1e308,
    ],
)
def test_use_time_far_in_the_past_or_future_is_400(api, acme_key, use_time):
    response = post(api, acme_key, usage_payload(use_time=use_time))

    assert_refused(response, field="use_time")


def test_use_time_a_little_ahead_is_accepted_as_clock_skew(api, acme_key):
    soon = timezone.now() + timedelta(hours=1)

    response = post(api, acme_key, usage_payload(use_time=soon.isoformat()))

    assert response.status_code == 201


def test_use_time_two_days_ahead_is_400(api, acme_key):
    later = timezone.now() + timedelta(days=2)

    assert_refused(post(api, acme_key, usage_payload(use_time=later.isoformat())), field="use_time")


def test_use_time_at_the_lower_bound_is_accepted(api, acme_key):
    response = post(api, acme_key, usage_payload(use_time="2000-01-01T00:00:00Z"))

    assert response.status_code == 201
    assert LLMUsage.objects.get().use_time == datetime(2000, 1, 1, tzinfo=UTC)


# --- numbers the columns cannot hold ----------------------------------------------------------------


def test_token_sum_past_bigint_is_400(api, acme_key):
    payload = usage_payload(input_tokens=BIG, output_tokens=BIG, cached_tokens=0)

    assert_refused(post(api, acme_key, payload), field="total_tokens")


@pytest.mark.parametrize(
    ("usages", "field"),
    [
        ({"prompt_tokens": 10**30, "completion_tokens": 1}, "usages.prompt_tokens"),
        ({"input_tokens": BIG, "cache_read_input_tokens": BIG}, "input_tokens"),
        ({"input_tokens": 1, "server_tool_use": {"web_search_requests": 2**40}}, "web_search_count"),
    ],
)
def test_raw_usages_too_large_for_the_columns_are_400(api, acme_key, usages, field):
    payload = usage_payload(usages=usages)
    for name in ("input_tokens", "output_tokens", "cached_tokens", "reasoning_tokens"):
        payload.pop(name)

    assert_refused(post(api, acme_key, payload), field=field)


def test_priced_amount_too_large_for_the_money_column_is_400(api, acme_key):
    ModelPrice.objects.create(
        model_name="gpt-4o",
        input_price=Decimal("1000"),
        output_price=Decimal("1000"),
        effective_from=datetime(2020, 1, 1, tzinfo=UTC),
    )
    payload = usage_payload(input_tokens=BIG, output_tokens=0, cached_tokens=0)
    payload.pop("amount")
    payload.pop("cost")

    body = assert_refused(post(api, acme_key, payload), field="amount")
    assert "digits" in body["errors"]["amount"]


@pytest.mark.parametrize("amount", ["NaN", "Infinity", "-1", "1e400", "12345678901234567890"])
def test_amount_that_is_not_money_is_400(api, acme_key, amount):
    assert_refused(post(api, acme_key, usage_payload(amount=amount)), field="amount")


@pytest.mark.parametrize("seconds", [1e999, -1])
def test_durations_out_of_range_are_400(api, acme_key, seconds):
    body = json.dumps(usage_payload()).encode()[:-1] + f', "finish_seconds": {seconds!r}}}'.encode()
    body = body.replace(b"inf", b"1e999")

    assert_refused(post(api, acme_key, body), field="finish_seconds")


# --- ids and keys that are not what they claim ------------------------------------------------------


@pytest.mark.parametrize(
    "bad_id", ["not-a-uuid", "1", "' OR 1=1 --", "%00", "x" * 5000, "0" * 33, "<script>alert(1)</script>"]
)
def test_record_id_that_is_not_a_uuid_is_400_naming_id(api, acme_key, bad_id):
    response = api.get(f"{URL}{bad_id}/", **bearer(acme_key))

    assert response.status_code in (400, 404), response.content[:300]
    if response.status_code == 400:
        assert "id" in response.json()


def test_client_cannot_choose_the_record_id(api, acme_key):
    assert_refused(post(api, acme_key, usage_payload(id="not-a-uuid")), field="id")


@pytest.mark.parametrize("value", ["zz", "A" * 64, "0" * 63, "0" * 65])
def test_token_key_hash_that_is_not_a_sha256_is_400(api, acme_key, value):
    assert_refused(post(api, acme_key, usage_payload(token_key_hash=value)), field="token_key_hash")


@pytest.mark.parametrize("value", ["fe80::1%eth0", "999.1.1.1", "localhost", "1.2.3.4/24"])
def test_request_ip_that_the_column_cannot_hold_is_400(api, acme_key, value):
    assert_refused(post(api, acme_key, usage_payload(request_ip=value)), field="request_ip")


def test_sql_and_html_in_text_fields_are_stored_verbatim(api, acme_key):
    hostile = "x'); DROP TABLE llmusage; -- <script>alert(1)</script>"

    response = post(
        api, acme_key, usage_payload(transno=hostile, username=hostile, metadata={hostile: hostile})
    )

    assert response.status_code == 201
    record = LLMUsage.objects.get()
    assert (record.transno, record.username, record.metadata) == (hostile, hostile, {hostile: hostile})
    assert "llmusage" in connection.introspection.table_names()
    fetched = api.get(f"{URL}{record.id}/", **bearer(acme_key)).json()
    assert fetched["username"] == hostile


# --- json_problem: its quick checks (containers only, the NUL looked for in the JSON text first) ------


def _reference_problem(value: Any, depth: int = 1) -> str | None:
    """Every string and key visited, one by one: what json_problem must answer."""
    if isinstance(value, str):
        return "nul" if "\x00" in value else None
    if isinstance(value, dict | list):
        if depth > MAX_JSON_DEPTH:
            return "deep"
        items = value.items() if isinstance(value, dict) else enumerate(value)
        for key, item in items:
            problem = ("nul" if isinstance(key, str) and "\x00" in key else None) or _reference_problem(
                item, depth + 1
            )
            if problem:
                return problem
    return None


def _nested(depth: int, leaf: Any) -> Any:
    for level in range(depth):
        leaf = [leaf] if level % 2 else {"k": leaf}
    return leaf


TEXTS = st.text(alphabet=st.sampled_from(["a", "\x00", "\\", "u", "0", "é"]), max_size=8)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | TEXTS,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(TEXTS, children, max_size=4),
    max_leaves=30,
)


def _depth(value: Any) -> int:
    if isinstance(value, dict | list):
        children = value.values() if isinstance(value, dict) else value
        return 1 + max((_depth(child) for child in children), default=0)
    return 0


@given(value=JSON_VALUES, extra_depth=st.sampled_from([0, MAX_JSON_DEPTH - 2, MAX_JSON_DEPTH + 1]))
@examples(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_json_problem_finds_what_a_walk_of_every_string_finds(value, extra_depth):
    value = _nested(extra_depth, value)

    problem = json_problem(value)

    if _depth(value) > MAX_JSON_DEPTH:
        assert problem == f"Nested more than {MAX_JSON_DEPTH} levels deep."
    elif _reference_problem(value) == "nul":
        assert problem == NUL_MESSAGE
    else:
        assert problem is None
    assert json_problem(value, encoded=msgspec.json.encode(value)) == problem


def test_an_escaped_backslash_before_u0000_is_not_a_nul():
    assert json_problem({"path": "C:\\u0000"}) is None
    assert json_problem({"path": "C:\\\x00"}) == NUL_MESSAGE
