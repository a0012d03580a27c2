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

from accounting.models import LedgerLine
from llmlog.ingest.rules import MAX_JSON_DEPTH, NUL_MESSAGE, json_problem
from llmlog.ingest.wire import UsageIn
from llmlog.limits import MAX_MONEY, MAX_TOKENS, MAX_WEB_SEARCHES
from llmlog.models import LLMUsage, ModelPrice
from llmlog.posting import account_pending_usage
from tests.conftest import bearer
from tests.factories import make_accounts, org_payload, usage_payload

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
def test_body_over_the_size_limit_is_413_and_stores_nothing(api, platform_key):
    payload = [usage_payload(ioinfo={"request": "x" * 100}) for _ in range(40)]

    response = post(api, platform_key, payload)

    body = assert_refused(response, status=413)
    assert "at most 4096 bytes" in body["detail"]


@pytest.mark.parametrize("name", sorted(TEXT_FIELDS))
def test_text_one_over_its_limit_is_400_naming_the_field(api, platform_key, name):
    response = post(api, platform_key, usage_payload(**{name: "x" * (TEXT_FIELDS[name] + 1)}))

    body = assert_refused(response, field=name)
    assert str(TEXT_FIELDS[name]) in body["errors"][name]


@pytest.mark.parametrize("name", sorted(TEXT_FIELDS))
def test_megabyte_string_in_any_text_field_is_400_naming_it(api, platform_key, name):
    response = post(api, platform_key, usage_payload(**{name: "é" * 1_000_000}))

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
def test_huge_json_field_is_400_naming_it(api, platform_key, name, value):
    response = post(api, platform_key, usage_payload(**{name: value}))

    body = assert_refused(response, field=name)
    assert "bytes" in body["errors"][name]


def test_huge_ioinfo_is_cut_to_the_limit_not_refused(api, platform_key):
    response = post(api, platform_key, usage_payload(ioinfo={"request": "x" * 1_000_000, "response": "y"}))

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
def test_json_nested_past_the_bound_is_400_naming_the_field(api, platform_key, name):
    response = post(api, platform_key, usage_payload(**{name: nested(MAX_JSON_DEPTH + 1)}))

    body = assert_refused(response, field=name)
    assert "nested" in body["errors"][name].lower()


@pytest.mark.parametrize("name", ["metadata", "usages"])
def test_json_nested_to_the_bound_is_stored(api, platform_key, name):
    response = post(api, platform_key, usage_payload(**{name: nested(MAX_JSON_DEPTH)}))

    assert response.status_code == 201, response.content[:500]
    assert getattr(LLMUsage.objects.get(), name) == nested(MAX_JSON_DEPTH)


@pytest.mark.parametrize("side", ["request", "response"])
def test_ioinfo_nested_past_the_bound_is_kept_as_text(api, platform_key, side):
    """ioinfo is a copy of the LLM traffic, kept for reading: a side too deep to store as JSON is kept as
    its JSON text (as a side too long is cut), so the billable record is never refused for it."""
    value = nested(MAX_JSON_DEPTH + 1)

    response = post(api, platform_key, usage_payload(ioinfo={side: value}))

    assert response.status_code == 201, response.content[:500]
    stored = LLMUsage.objects.get().ioinfo[side]
    assert json.loads(stored) == value
    assert api.get(f"{URL}{response.json()['id']}/", **bearer(platform_key)).status_code == 200


@pytest.mark.parametrize("where", ["metadata", "usages", "ioinfo"])
def test_json_nested_past_what_the_parser_can_read_is_400(api, platform_key, where):
    deep = b"[" * 100_000 + b"]" * 100_000
    inner = b'{"request": ' + deep + b"}" if where == "ioinfo" else deep
    body = json.dumps(usage_payload()).encode()[:-1] + b', "' + where.encode() + b'": ' + inner + b"}"

    response = post(api, platform_key, body)

    assert response.status_code == 400
    assert "nested" in json.dumps(response.json()).lower()
    assert not LLMUsage.objects.exists()


def test_deep_list_as_the_whole_body_is_400(api, platform_key):
    response = post(api, platform_key, b"[" * 100_000 + b"]" * 100_000)

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
def test_nul_inside_a_json_field_is_400_naming_it(api, platform_key, name, value):
    response = post(api, platform_key, usage_payload(**{name: value}))

    body = assert_refused(response, field=name)
    assert "NUL" in body["errors"][name]


def test_nul_in_ioinfo_never_costs_the_record(api, platform_key):
    """Text keeps a U+FFFD where the NUL was; a JSON side is kept as its JSON text, NUL escaped."""
    reply = {"choices": [{"text": "ok\x00", "k\x00": 1}]}

    response = post(api, platform_key, usage_payload(ioinfo={"request": "say\x00hi", "response": reply}))

    assert response.status_code == 201, response.content[:500]
    stored = LLMUsage.objects.get().ioinfo
    assert stored["request"] == "say\ufffdhi"
    assert json.loads(stored["response"]) == reply


def test_invalid_utf8_is_400_naming_the_field(api, platform_key):
    body = json.dumps(usage_payload(userid="PLACEHOLDER")).encode().replace(b"PLACEHOLDER", b"\xff\xfe")

    response = post(api, platform_key, body)

    body = assert_refused(response, field="userid")
    assert "UTF-8" in body["errors"]["userid"]


def test_invalid_utf8_in_one_bulk_item_keeps_the_others(api, platform_key):
    good = json.dumps(usage_payload(transno="good")).encode()
    bad = json.dumps(usage_payload(transno="bad", username="PLACEHOLDER")).encode()
    body = b"[" + good + b"," + bad.replace(b"PLACEHOLDER", b"caf\xe9") + b"]"

    response = post(api, platform_key, body)

    assert response.status_code == 207
    assert response.json()["items"][1]["errors"] == {"username": "Not valid UTF-8."}
    assert list(LLMUsage.objects.values_list("transno", flat=True)) == ["good"]


@pytest.mark.parametrize("escaped", [r"\ud800", r"\udc80x", r"a\ud800\u0041"])
def test_lone_surrogate_is_400(api, platform_key, escaped):
    body = json.dumps(usage_payload(userid="PLACEHOLDER")).encode().replace(b"PLACEHOLDER", escaped.encode())

    assert_refused(post(api, platform_key, body))


def test_surrogate_pair_is_a_character_and_is_stored(api, platform_key):
    body = json.dumps(usage_payload(userid="PLACEHOLDER")).encode().replace(b"PLACEHOLDER", rb"\ud83d\ude00")

    assert post(api, platform_key, body).status_code == 201
    assert LLMUsage.objects.get().userid == "\U0001f600"


@pytest.mark.parametrize("body", [b'"text"', b"42", b"null", b"true", b'[1, "a"]', b"{}", b"\x00", b"\xff"])
def test_body_that_is_not_a_record_is_400(api, platform_key, body):
    response = post(api, platform_key, body)

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
def test_use_time_far_in_the_past_or_future_is_400(api, platform_key, use_time):
    response = post(api, platform_key, usage_payload(use_time=use_time))

    assert_refused(response, field="use_time")


def test_use_time_a_little_ahead_is_accepted_as_clock_skew(api, platform_key):
    soon = timezone.now() + timedelta(hours=1)

    response = post(api, platform_key, usage_payload(use_time=soon.isoformat()))

    assert response.status_code == 201


def test_use_time_two_days_ahead_is_400(api, platform_key):
    later = timezone.now() + timedelta(days=2)

    assert_refused(post(api, platform_key, usage_payload(use_time=later.isoformat())), field="use_time")


def test_use_time_at_the_lower_bound_is_accepted(api, platform_key):
    response = post(api, platform_key, usage_payload(use_time="2000-01-01T00:00:00Z"))

    assert response.status_code == 201
    assert LLMUsage.objects.get().use_time == datetime(2000, 1, 1, tzinfo=UTC)


# --- numbers the columns cannot hold ----------------------------------------------------------------


def test_token_counts_near_bigint_are_400_naming_the_bound(api, platform_key):
    payload = usage_payload(input_tokens=BIG, output_tokens=BIG, cached_tokens=0)

    body = assert_refused(post(api, platform_key, payload), field="input_tokens")
    assert str(MAX_TOKENS) in body["errors"]["input_tokens"]


@pytest.mark.parametrize(
    ("usages", "field"),
    [
        ({"prompt_tokens": 10**30, "completion_tokens": 1}, "usages.prompt_tokens"),
        ({"input_tokens": BIG, "cache_read_input_tokens": 1}, "usages.input_tokens"),
        ({"input_tokens": MAX_TOKENS, "cache_read_input_tokens": MAX_TOKENS}, "input_tokens"),
        ({"input_tokens": 1, "server_tool_use": {"web_search_requests": 10**7}}, "web_search_count"),
    ],
)
def test_raw_usages_too_large_for_the_columns_are_400(api, platform_key, usages, field):
    payload = usage_payload(usages=usages)
    for name in ("input_tokens", "output_tokens", "cached_tokens", "reasoning_tokens"):
        payload.pop(name)

    assert_refused(post(api, platform_key, payload), field=field)


def test_priced_amount_past_the_money_bound_is_400(api, platform_key):
    ModelPrice.objects.create(
        model_name="gpt-4o",
        input_price=Decimal("1000"),
        output_price=Decimal("1000"),
        effective_from=datetime(2020, 1, 1, tzinfo=UTC),
    )
    payload = usage_payload(input_tokens=MAX_TOKENS, output_tokens=0, cached_tokens=0)
    payload.pop("amount")
    payload.pop("cost")

    body = assert_refused(post(api, platform_key, payload), field="amount")
    assert str(MAX_MONEY) in body["errors"]["amount"]


@pytest.mark.parametrize("amount", ["NaN", "Infinity", "-1", "1e400", "12345678901234567890"])
def test_amount_that_is_not_money_is_400(api, platform_key, amount):
    assert_refused(post(api, platform_key, usage_payload(amount=amount)), field="amount")


@pytest.mark.parametrize("seconds", [1e999, -1])
def test_durations_out_of_range_are_400(api, platform_key, seconds):
    body = json.dumps(usage_payload()).encode()[:-1] + f', "finish_seconds": {seconds!r}}}'.encode()
    body = body.replace(b"inf", b"1e999")

    assert_refused(post(api, platform_key, body), field="finish_seconds")


# --- ids and keys that are not what they claim ------------------------------------------------------


@pytest.mark.parametrize(
    "bad_id", ["not-a-uuid", "1", "' OR 1=1 --", "%00", "x" * 5000, "0" * 33, "<script>alert(1)</script>"]
)
def test_record_id_that_is_not_a_uuid_is_400_naming_id(api, platform_key, bad_id):
    response = api.get(f"{URL}{bad_id}/", **bearer(platform_key))

    assert response.status_code in (400, 404), response.content[:300]
    if response.status_code == 400:
        assert "id" in response.json()


@pytest.mark.parametrize("route", ["/api/llmusage/", "/api/llmusage-history/"])
def test_a_nul_in_a_record_id_is_named_id_as_the_url_documents_it(api, platform_key, route):
    response = api.get(f"{route}a%00b/", **bearer(platform_key))

    assert response.status_code == 400
    assert response.json() == {"id": ["Must not contain NUL characters."]}


def test_client_cannot_choose_the_record_id(api, platform_key):
    assert_refused(post(api, platform_key, usage_payload(id="not-a-uuid")), field="id")


@pytest.mark.parametrize("value", ["zz", "A" * 64, "0" * 63, "0" * 65])
def test_token_key_hash_that_is_not_a_sha256_is_400(api, platform_key, value):
    assert_refused(post(api, platform_key, usage_payload(token_key_hash=value)), field="token_key_hash")


@pytest.mark.parametrize("value", ["fe80::1%eth0", "999.1.1.1", "localhost", "1.2.3.4/24"])
def test_request_ip_that_the_column_cannot_hold_is_400(api, platform_key, value):
    assert_refused(post(api, platform_key, usage_payload(request_ip=value)), field="request_ip")


def test_sql_and_html_in_text_fields_are_stored_verbatim(api, platform_key):
    hostile = "x'); DROP TABLE llmusage; -- <script>alert(1)</script>"

    response = post(
        api, platform_key, usage_payload(transno=hostile, username=hostile, metadata={hostile: hostile})
    )

    assert response.status_code == 201
    record = LLMUsage.objects.get()
    assert (record.transno, record.username, record.metadata) == (hostile, hostile, {hostile: hostile})
    assert "llmusage" in connection.introspection.table_names()
    fetched = api.get(f"{URL}{record.id}/", **bearer(platform_key)).json()
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


# --- who may state money (issue 14) ----------------------------------------------------------------
# An org key's gateway may not say what its calls cost or whom they pay: amount, cost, ownerid and price
# are a platform key's only. The attack this stops: "amount": "0", "cost": "1000000", "ownerid": "openai"
# posted by a tenant, crediting an owner account with the platform's money.


def _gpt4o_prices(owner: str = "openai") -> tuple[ModelPrice, ModelPrice]:
    since = datetime(2020, 1, 1, tzinfo=UTC)
    sale = ModelPrice.objects.create(
        model_name="gpt-4o",
        kind="sale",
        effective_from=since,
        input_price=Decimal("5"),
        output_price=Decimal("15"),
    )
    cost = ModelPrice.objects.create(
        model_name="gpt-4o",
        kind="cost",
        ownerid=owner,
        effective_from=since,
        input_price=Decimal("2.5"),
        output_price=Decimal("10"),
    )
    return sale, cost


@pytest.mark.parametrize(
    "stated",
    [
        {"amount": "0"},
        {"cost": "1000000"},
        {"ownerid": "openai"},
        {"price": {"input_price": "0"}},
        {"amount": 0, "cost": 1000000, "ownerid": "openai"},
    ],
)
def test_org_key_stating_money_is_403_naming_it_and_stores_nothing(api, acme_key, stated):
    bulk = [org_payload(), org_payload(**stated), org_payload()]

    response = post(api, acme_key, bulk)

    assert response.status_code == 403, response.content
    detail = response.json()["detail"]
    assert all(name in detail for name in stated), detail
    assert not LLMUsage.objects.exists()


def test_org_key_stating_money_with_an_escaped_key_is_still_403(api, acme_key):
    # "\u0061mount" is "amount" to any JSON reader: the check reads keys as JSON does, not as bytes.
    body = json.dumps(org_payload())[:-1].encode() + b', "\\u0061mount": "0"}'

    assert post(api, acme_key, body).status_code == 403
    assert not LLMUsage.objects.exists()


def test_org_key_stating_money_in_a_malformed_record_is_still_403(api, acme_key):
    response = post(api, acme_key, [org_payload(), org_payload(cost="1000000", input_tokens=-1)])

    assert response.status_code == 403
    assert not LLMUsage.objects.exists()


def test_platform_key_may_state_money_owner_and_price(api, platform_key):
    price = {"input_price": "5", "output_price": "15", "unit": "per 1M tokens"}
    payload = usage_payload(amount="0.02", cost="0.01", ownerid="openai", price=price)

    response = post(api, platform_key, payload)

    assert response.status_code == 201, response.content
    record = LLMUsage.objects.get()
    assert (record.amount, record.cost, record.ownerid, record.price) == (
        Decimal("0.02"),
        Decimal("0.01"),
        "openai",
        price,
    )


def test_org_key_record_is_priced_from_the_book_and_owned_by_its_cost_price_owner(api, acme_key):
    sale, cost = _gpt4o_prices(owner="openai")

    response = post(
        api, acme_key, org_payload(input_tokens=1_000_000, output_tokens=100_000, cached_tokens=0)
    )

    assert response.status_code == 201, response.content
    record = LLMUsage.objects.get()
    assert record.amount == Decimal("6.5")  # 1M input at 5 + 0.1M output at 15
    assert record.cost == Decimal("3.5")
    assert record.ownerid == "openai"
    assert (record.price["sale"]["id"], record.price["cost"]["id"]) == (sale.pk, cost.pk)


def test_owner_comes_from_the_sale_price_when_the_cost_price_names_none(api, acme_key):
    ModelPrice.objects.create(
        model_name="gpt-4o",
        kind="sale",
        ownerid="platform-models",
        effective_from=datetime(2020, 1, 1, tzinfo=UTC),
        input_price=Decimal("1"),
        output_price=Decimal("1"),
    )

    assert post(api, acme_key, org_payload()).status_code == 201
    assert LLMUsage.objects.get().ownerid == "platform-models"


def test_org_key_record_is_posted_to_the_owner_the_book_names(api, acme_key):
    _gpt4o_prices(owner="openai")
    make_accounts(customers=("acme",), owners=("openai",))
    post(api, acme_key, org_payload(input_tokens=1_000_000, output_tokens=100_000, cached_tokens=0))

    account_pending_usage()

    record = LLMUsage.objects.get()
    assert record.accounting_status == "accounted", record.accounting_status
    owner_lines = LedgerLine.objects.filter(account__org="openai")
    assert [line.amount for line in owner_lines] == [Decimal("3.5")]


def test_reprice_at_posting_sets_the_owner_from_the_book(api, acme_key):
    post(api, acme_key, org_payload())  # no price yet: stored unpriced, owner unknown
    assert (LLMUsage.objects.get().amount, LLMUsage.objects.get().ownerid) == (None, "")
    _gpt4o_prices(owner="openai")

    account_pending_usage()

    record = LLMUsage.objects.get()
    assert record.amount is not None
    assert record.ownerid == "openai"


# --- bounds per record ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "input_tokens",
        "output_tokens",
        "cached_tokens",
        "cache_creation_tokens",
        "reasoning_tokens",
        "image_input_tokens",
    ],
)
def test_token_count_past_its_bound_is_400_naming_field_and_bound(api, platform_key, name):
    payload = usage_payload(input_tokens=MAX_TOKENS, output_tokens=MAX_TOKENS, cached_tokens=0)
    payload[name] = MAX_TOKENS + 1

    body = assert_refused(post(api, platform_key, payload), field=name)
    assert str(MAX_TOKENS) in body["errors"][name]


@pytest.mark.parametrize("value", [2**63 - 1, 2**63, 2**64])
def test_token_count_near_bigint_is_400(api, platform_key, value):
    body = assert_refused(post(api, platform_key, usage_payload(output_tokens=value)), field="output_tokens")
    assert str(MAX_TOKENS) in json.dumps(body) or "int" in json.dumps(body)


def test_token_counts_at_their_bound_are_stored(api, platform_key):
    payload = usage_payload(
        input_tokens=MAX_TOKENS, output_tokens=MAX_TOKENS, cached_tokens=0, web_search_count=MAX_WEB_SEARCHES
    )

    assert post(api, platform_key, payload).status_code == 201
    assert LLMUsage.objects.get().total_tokens == 2 * MAX_TOKENS


def test_web_searches_past_their_bound_are_400(api, platform_key):
    payload = usage_payload(web_search_count=MAX_WEB_SEARCHES + 1)

    body = assert_refused(post(api, platform_key, payload), field="web_search_count")
    assert str(MAX_WEB_SEARCHES) in body["errors"]["web_search_count"]


@pytest.mark.parametrize("name", ["amount", "cost"])
def test_money_past_its_bound_is_400_naming_field_and_bound(api, platform_key, name):
    payload = usage_payload(**{name: str(MAX_MONEY + Decimal("0.00001"))})

    body = assert_refused(post(api, platform_key, payload), field=name)
    assert str(MAX_MONEY) in body["errors"][name]


def test_money_at_its_bound_is_stored(api, platform_key):
    assert post(api, platform_key, usage_payload(amount=str(MAX_MONEY), cost="0")).status_code == 201


# --- money as text ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["amount", "cost"])
@pytest.mark.parametrize(
    "text",
    [" 1", "1 ", "1_000", "\u0661\u0662", "-0", "-1", "+1", "1e3", "1E-3", "1.2.3", "", ".", "0x10", "1\n"],
)
def test_money_string_that_is_not_plain_digits_is_400(api, platform_key, name, text):
    body = assert_refused(post(api, platform_key, usage_payload(**{name: text})), field=name)
    assert "digits" in body["errors"][name] or "non-negative" in body["errors"][name]


def test_money_as_negative_zero_number_is_400(api, platform_key):
    body = json.dumps(usage_payload())[:-1].encode() + b', "cost": -0}'
    assert_refused(post(api, platform_key, body), field="cost")


@pytest.mark.parametrize(
    ("text", "stored"), [("0.00600", "0.00600"), ("12", "12"), (".5", "0.5"), ("3.", "3")]
)
def test_plain_money_strings_are_stored(api, platform_key, text, stored):
    assert post(api, platform_key, usage_payload(amount=text)).status_code == 201
    assert LLMUsage.objects.get().amount == Decimal(stored)


@pytest.mark.parametrize("currency", ["USD\n", "usd", "US", "USDX", "\u0555SD", " USD"])
def test_bad_currency_is_400_for_its_item_and_the_valid_neighbour_is_stored(api, platform_key, currency):
    good = usage_payload()
    response = post(api, platform_key, [good, usage_payload(currency=currency)])

    assert response.status_code == 207, response.content
    items = response.json()["items"]
    assert [item["status"] for item in items] == ["created", "error"]
    assert "currency" in items[1]["errors"]
    assert list(LLMUsage.objects.values_list("transno", flat=True)) == [good["transno"]]


def test_token_key_hash_with_a_trailing_newline_is_400(api, platform_key):
    value = "0" * 64 + "\n"
    assert_refused(post(api, platform_key, usage_payload(token_key_hash=value)), field="token_key_hash")


# --- the adapters: the same rules in a gateway's terms ------------------------------------------------


def _litellm(**overrides: Any) -> dict[str, Any]:
    from tests.llmlog.test_adapter_litellm import litellm_record

    return litellm_record(**overrides)


def _post_litellm(api, key: str, records: list[dict]):
    return api.post(
        "/api/ingest/litellm/", data=json.dumps(records), content_type="application/json", **bearer(key)
    )


@pytest.mark.parametrize("stated", [{"amount": "0"}, {"cost": 1000000}, {"ownerid": "openai"}, {"price": {}}])
def test_litellm_org_key_stating_money_is_403_and_stores_nothing(api, acme_key, stated):
    response = _post_litellm(api, acme_key, [_litellm(), _litellm(**stated)])

    assert response.status_code == 403, response.content
    assert all(name in response.json()["detail"] for name in stated)
    assert not LLMUsage.objects.exists()


def test_litellm_org_key_reported_cost_is_not_a_charge(api, acme_key):
    _, cost_price = _gpt4o_prices(owner="openai")
    record = _litellm(response_cost=1000000)  # what a hostile org would like the owner paid

    response = _post_litellm(api, acme_key, [record])

    assert response.status_code == 201, response.content
    usage = LLMUsage.objects.get()
    assert usage.cost == Decimal("0.00075")  # 100 input at 2.5 + 50 output at 10 per 1M, from the book
    assert usage.amount == Decimal("0.00125")
    assert usage.ownerid == "openai"
    assert usage.provider_cost == Decimal("1000000")  # kept as reported, beside the computed cost
    assert "reported_cost" not in usage.metadata


def test_litellm_platform_key_may_state_the_owner_and_its_reported_cost_is_the_cost(api, platform_key):
    response = _post_litellm(api, platform_key, [_litellm(ownerid="openai")])

    assert response.status_code == 201, response.content
    usage = LLMUsage.objects.get()
    assert (usage.cost, usage.ownerid) == (Decimal("0.00125"), "openai")


@pytest.mark.parametrize("text", [" 1", "1_0", "\u0661", "-0", "1e3"])
def test_litellm_money_string_that_is_not_plain_digits_is_an_item_error(api, platform_key, text):
    response = _post_litellm(api, platform_key, [_litellm(response_cost=text), _litellm()])

    assert response.status_code == 207, response.content
    assert "response_cost" in response.json()["items"][0]["errors"]
    assert LLMUsage.objects.count() == 1


def _span_body(attributes: dict[str, Any]) -> bytes:
    from tests.llmlog.test_adapter_otlp import CHAT, export_body, make_spans

    return export_body(make_spans(("chat", {**CHAT, **attributes})))


@pytest.mark.parametrize(
    "attributes", [{"llmlog.amount": "0"}, {"llmlog.cost": 1000000.0}, {"llmlog.ownerid": "openai"}]
)
def test_otlp_org_key_stating_money_is_403_and_stores_nothing(api, acme_key, attributes):
    from google.rpc.status_pb2 import Status as RpcStatus

    body = _span_body(attributes)
    response = api.post("/v1/traces", data=body, content_type="application/x-protobuf", **bearer(acme_key))

    assert response.status_code == 403, response.content
    message = RpcStatus.FromString(response.content).message
    assert attributes.popitem()[0].removeprefix("llmlog.") in message
    assert not LLMUsage.objects.exists()


def test_otlp_org_key_reported_cost_is_not_a_charge(api, acme_key):
    body = _span_body({"gen_ai.cost.total_cost": 1000000.0})

    response = api.post("/v1/traces", data=body, content_type="application/x-protobuf", **bearer(acme_key))

    assert response.status_code == 200, response.content
    usage = LLMUsage.objects.get()
    assert usage.cost == 0 and usage.amount is None  # no price in the book: left to accounting (no_price)
    assert usage.provider_cost == Decimal("1000000")


def test_otlp_platform_key_states_money_by_attribute(api, platform_key):
    body = _span_body({"llmlog.amount": "0.5", "llmlog.cost": 0.25, "llmlog.ownerid": "openai"})

    response = api.post(
        "/v1/traces", data=body, content_type="application/x-protobuf", **bearer(platform_key)
    )

    assert response.status_code == 200, response.content
    usage = LLMUsage.objects.get()
    assert (usage.amount, usage.cost, usage.ownerid) == (Decimal("0.5"), Decimal("0.25"), "openai")
