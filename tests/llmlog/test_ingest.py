import hashlib
import json
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from django.test import override_settings
from django.utils import timezone

from llmlog.bodies import TooManyRecords
from llmlog.ingest.service import usage_ingest
from llmlog.ingest.wire import BodyError
from llmlog.models import LLMUsage, LLMUsageHistory, ModelPrice
from tests.conftest import bearer
from tests.factories import org_payload, usage_payload

pytestmark = pytest.mark.django_db


def ingest(payload, org: str = ""):
    return usage_ingest(body=json.dumps(payload).encode(), org=org)


def test_single_record_is_stored_with_derived_fields():
    result = ingest(usage_payload(transno="abc-1", input_tokens=1000, output_tokens=50))

    assert [item.status for item in result.items] == ["created"]
    record = LLMUsage.objects.get(transno="abc-1")
    assert str(record.id) == result.items[0].id
    assert record.total_tokens == 1050
    assert record.use_date.isoformat() == "2026-11-20"
    assert record.amount == Decimal("0.00600")
    assert record.accounting_status == "pending"


def test_duplicate_transno_returns_existing_record_without_new_row():
    payload = usage_payload(transno="dup-1")
    first = ingest(payload)
    # Same payload, keys in another order: still the same record.
    second = ingest(dict(reversed(list(payload.items()))))

    assert second.items[0].status == "duplicate"
    assert second.items[0].id == first.items[0].id
    assert LLMUsage.objects.filter(transno="dup-1").count() == 1


def test_known_transno_with_different_payload_is_a_conflict():
    ingest(usage_payload(transno="dup-2", output_tokens=300))
    result = ingest(usage_payload(transno="dup-2", output_tokens=301))

    assert result.items[0].status == "conflict"
    assert "different payload" in result.items[0].errors["transno"]
    assert LLMUsage.objects.get(transno="dup-2").output_tokens == 300


def test_transno_already_moved_to_history_is_a_duplicate():
    payload = usage_payload(transno="old-1")
    ingest(payload)
    record = LLMUsage.objects.get(transno="old-1")
    values = {f.attname: getattr(record, f.attname) for f in LLMUsage._meta.concrete_fields}
    LLMUsageHistory.objects.create(**values, backup_time=datetime.now(UTC))
    record.delete()

    result = ingest(payload)

    assert result.items[0].status == "duplicate"
    assert not LLMUsage.objects.filter(transno="old-1").exists()


def test_a_record_of_today_is_created_once_then_a_duplicate_or_a_conflict():
    """Today's single records take the one-statement path on PostgreSQL: same answers as any other."""
    now = timezone.now().isoformat()
    payload = usage_payload(transno="today-1", use_time=now, output_tokens=300)

    created = ingest(payload)
    again = ingest(payload)
    changed = ingest({**payload, "output_tokens": 301})

    assert [created.items[0].status, again.items[0].status, changed.items[0].status] == [
        "created",
        "duplicate",
        "conflict",
    ]
    assert created.items[0].transno == "today-1" and created.items[0].row["output_tokens"] == 300
    assert again.items[0].id == changed.items[0].id == created.items[0].id
    record = LLMUsage.objects.get(transno="today-1")
    assert str(record.id) == created.items[0].id and record.output_tokens == 300
    assert record.use_date == timezone.localdate()


def test_bulk_keeps_good_items_and_reports_each_bad_one():
    ingest(usage_payload(transno="seen"))
    items = [
        usage_payload(transno="good-1"),
        usage_payload(transno="bad-1", input_tokens=-5),
        usage_payload(transno="good-2"),
        usage_payload(transno="bad-2", cached_tokens=5000, input_tokens=100),
        usage_payload(transno="seen", output_tokens=1),
        usage_payload(transno="good-1"),  # the same again within the batch
        {"transno": "bad-3", "model_name": "gpt-4o", "input_tokens": "many"},
    ]
    result = usage_ingest(body=json.dumps(items).encode())

    statuses = [item.status for item in result.items]
    assert statuses == ["created", "error", "created", "error", "conflict", "duplicate", "error"]
    assert "input_tokens" in result.items[1].errors
    assert "cached_tokens" in result.items[3].errors
    assert "input_tokens" in result.items[6].errors
    assert set(LLMUsage.objects.values_list("transno", flat=True)) == {"seen", "good-1", "good-2"}


def test_record_without_transno_gets_one():
    result = ingest(usage_payload(transno=None))

    assert result.items[0].status == "created"
    assert LLMUsage.objects.get(pk=result.items[0].id).transno == result.items[0].transno


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"input_tokens": 100, "cached_tokens": 80, "cache_creation_tokens": 30}, "cached_tokens"),
        ({"output_tokens": 10, "reasoning_tokens": 11}, "reasoning_tokens"),
        ({"input_tokens": 10, "output_tokens": 5, "total_tokens": 16}, "total_tokens"),
        ({"amount": "-1"}, "amount"),
        ({"amount": "NaN"}, "amount"),
        ({"amount": "1e20"}, "amount"),
        ({"request_ip": "999.1.1.1"}, "request_ip"),
        ({"status": "maybe"}, "status"),
        ({"unknown_field": 1}, "unknown_field"),
        ({"model_name": ""}, "model_name"),
        ({"use_time": "yesterday"}, "use_time"),
        ({"metadata": {"blob": "x" * 10_000}}, "metadata"),
    ],
)
def test_rule_violations_name_the_field(overrides, field):
    result = ingest(usage_payload(**overrides))

    assert result.items[0].status == "error"
    assert field in result.items[0].errors
    assert not LLMUsage.objects.exists()


def test_missing_model_name_is_named():
    payload = usage_payload()
    del payload["model_name"]

    assert ingest(payload).items[0].errors == {"model_name": "This field is required."}


@pytest.mark.parametrize("body", [b"{", b"", b"[1, 2", b"nope"])
def test_malformed_body_is_refused_whole(body):
    with pytest.raises(BodyError):
        usage_ingest(body=body)


def test_more_than_1000_records_are_refused(api, platform_key):
    """Native bulk stays at 1,000 (LLMLOG_BULK_MAX): one more is refused whole, before any write, and the
    API answers a 413 naming the cap (tests/llmlog/test_request_limits.py: the same at any cap)."""
    body = json.dumps([usage_payload() for _ in range(1001)]).encode()

    with pytest.raises(TooManyRecords, match="At most 1000 records") as refused:
        usage_ingest(body=body)
    response = api.post("/api/llmusage/", body, content_type="application/json", **bearer(platform_key))

    assert (refused.value.limit, refused.value.setting) == (1000, "LLMLOG_BULK_MAX")
    assert response.status_code == 413
    assert response.json() == {
        "detail": str(refused.value),
        "setting": "LLMLOG_BULK_MAX",
        "max_records": 1000,
    }
    assert not LLMUsage.objects.exists()


def test_raw_gateway_key_is_never_stored_only_its_sha256():
    ingest(usage_payload(transno="k-1", token_key="sk-secret-gateway-key"))

    record = LLMUsage.objects.get(transno="k-1")
    assert record.token_key_hash == hashlib.sha256(b"sk-secret-gateway-key").hexdigest()
    stored = json.dumps(list(LLMUsage.objects.values().get(transno="k-1").values()), default=str)
    assert "sk-secret-gateway-key" not in stored


@override_settings(LLMLOG_IO_LIMIT=10)
def test_ioinfo_is_cut_to_the_limit_and_flagged():
    ingest(usage_payload(transno="io-1", ioinfo={"request": "x" * 50, "response": {"text": "ok"}}))
    ingest(usage_payload(transno="io-2", ioinfo={"request": "short", "response": "fine"}))

    cut = LLMUsage.objects.get(transno="io-1").ioinfo
    assert cut == {"request": "x" * 10, "response": '{"text":"o', "truncated": True}
    assert LLMUsage.objects.get(transno="io-2").ioinfo == {
        "request": "short",
        "response": "fine",
        "truncated": False,
    }


def test_org_key_pins_records_to_its_org():
    assert ingest(org_payload(transno="o-1", userorgid=""), org="acme").items[0].status == "created"
    refused = ingest(org_payload(transno="o-2", userorgid="globex"), org="acme")

    assert LLMUsage.objects.get(transno="o-1").userorgid == "acme"
    assert "userorgid" in refused.items[0].errors


def test_unix_milliseconds_and_naive_times_are_understood(settings):
    settings.TIME_ZONE = "Asia/Shanghai"
    ingest(usage_payload(transno="t-ms", use_time=1_763_600_000_000))
    ingest(usage_payload(transno="t-naive", use_time="2026-11-20T23:30:00"))

    assert LLMUsage.objects.get(transno="t-ms").use_time == datetime.fromtimestamp(1_763_600_000, tz=UTC)
    naive = LLMUsage.objects.get(transno="t-naive")
    assert naive.use_time == datetime(2026, 11, 20, 15, 30, tzinfo=UTC)
    assert naive.use_date.isoformat() == "2026-11-20"


def test_use_date_is_the_day_in_time_zone(settings):
    settings.TIME_ZONE = "Asia/Shanghai"
    ingest(usage_payload(transno="tz-1", use_time="2026-11-20T20:00:00+00:00"))

    assert LLMUsage.objects.get(transno="tz-1").use_date.isoformat() == "2026-11-21"


@pytest.mark.parametrize(
    ("usages", "expected"),
    [
        (
            {
                "prompt_tokens": 1000,
                "completion_tokens": 400,
                "total_tokens": 1400,
                "prompt_tokens_details": {"cached_tokens": 600},
                "completion_tokens_details": {"reasoning_tokens": 300},
            },
            {"input_tokens": 1000, "output_tokens": 400, "cached_tokens": 600, "reasoning_tokens": 300},
        ),
        (
            {
                "input_tokens": 50,
                "cache_read_input_tokens": 900,
                "cache_creation_input_tokens": 100,
                "output_tokens": 70,
            },
            {"input_tokens": 1050, "output_tokens": 70, "cached_tokens": 900, "cache_creation_tokens": 100},
        ),
    ],
    ids=["openai", "anthropic"],
)
def test_token_counts_are_derived_from_raw_usages(usages, expected):
    payload = usage_payload(transno="raw-1", usages=usages)
    for name in ("input_tokens", "output_tokens", "cached_tokens", "reasoning_tokens"):
        payload.pop(name)
    assert ingest(payload).items[0].status == "created"

    record = LLMUsage.objects.get(transno="raw-1")
    for name, value in expected.items():
        assert getattr(record, name) == value
    assert record.total_tokens == expected["input_tokens"] + expected["output_tokens"]
    assert record.usages == usages


def test_bad_raw_usage_value_is_named():
    payload = usage_payload(usages={"prompt_tokens": "ten"})
    del payload["input_tokens"]

    assert "usages.prompt_tokens" in ingest(payload).items[0].errors


# --- pricing ------------------------------------------------------------------------------------


@pytest.fixture
def gpt4o_prices():
    ModelPrice.objects.create(
        model_name="gpt-4o",
        kind="sale",
        effective_from=datetime(2026, 1, 1, tzinfo=UTC),
        input_price=Decimal("2.50"),
        output_price=Decimal("10.00"),
        cached_input_price=Decimal("1.25"),
        reasoning_price=Decimal("20.00"),
        request_price=Decimal("0.001"),
    )
    ModelPrice.objects.create(
        model_name="gpt-4o",
        kind="sale",
        effective_from=datetime(2026, 12, 1, tzinfo=UTC),  # not yet in effect
        input_price=Decimal("99"),
        output_price=Decimal("99"),
    )
    ModelPrice.objects.create(
        model_name="gpt-4o",
        kind="cost",
        effective_from=datetime(2026, 1, 1, tzinfo=UTC),
        input_price=Decimal("2.00"),
        output_price=Decimal("8.00"),
    )


def test_record_without_amount_is_priced_per_disjoint_part(gpt4o_prices):
    payload = usage_payload(
        transno="p-1",
        input_tokens=1_000_000,
        cached_tokens=400_000,
        output_tokens=100_000,
        reasoning_tokens=20_000,
    )
    del payload["amount"], payload["cost"]
    ingest(payload)

    record = LLMUsage.objects.get(transno="p-1")
    # 600k uncached x 2.50 + 400k cached x 1.25 + 80k output x 10 + 20k reasoning x 20, per 1M, + 0.001
    assert record.amount == Decimal("1.50") + Decimal("0.50") + Decimal("0.80") + Decimal("0.40") + Decimal(
        "0.001"
    )
    # cost: no cached price, so cache reads at the input price; no reasoning price, so at output
    assert record.cost == Decimal("2.00") + Decimal("0.80")
    assert record.price["sale"]["input_price"] == "2.50000"
    assert record.price["sale"]["cached_input_price"] == "1.25000"
    assert record.price["cost"]["output_price"] == "8.00000"


def test_amount_sent_by_the_gateway_is_kept(gpt4o_prices):
    ingest(usage_payload(transno="p-2", amount="0.12345", cost="0.10000"))

    record = LLMUsage.objects.get(transno="p-2")
    assert (record.amount, record.cost, record.price) == (Decimal("0.12345"), Decimal("0.10000"), None)


def test_model_without_price_is_kept_unpriced_and_pending():
    payload = usage_payload(transno="p-3", model_name="mystery-model")
    del payload["amount"], payload["cost"]
    result = ingest(payload)

    record = LLMUsage.objects.get(transno="p-3")
    assert result.items[0].status == "created"
    assert record.amount is None
    assert record.accounting_status == "pending"


def test_failed_call_without_amount_is_not_billed(gpt4o_prices):
    payload = usage_payload(transno="p-4", status="failed", code=502, output_tokens=0)
    del payload["amount"], payload["cost"]
    ingest(payload)

    record = LLMUsage.objects.get(transno="p-4")
    assert (record.amount, record.cost, record.accounting_status) == (Decimal(0), Decimal(0), "skipped")


def test_amount_is_rounded_to_five_places():
    ingest(usage_payload(transno="r-1", amount=0.0000123456, cost="0.000005"))

    record = LLMUsage.objects.get(transno="r-1")
    assert record.amount == Decimal("0.00001")
    assert record.cost == Decimal("0.00001")
