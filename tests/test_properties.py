"""Property tests (hypothesis) on ingest and pricing, through the real API and database.

- Any record ingest accepts reads back equal to what was sent (text, tokens, times, JSON, money).
- Money is Decimal end to end: an amount with up to 5 places reads back exactly, more places are
  rounded half-up exactly as `quantize_money` rounds them, never through a float; answers carry money
  as strings.
- Tokens and amounts are never negative: whatever numbers a client sends, a record stored holds none
  below zero and keeps the token relations; anything else is a 400 that stores nothing.
- Totals from /api/llmusage/stats/ (and /count/) equal the sums of the records, whether the hours are
  read from the rows or from the hourly rollups.
- Pricing charges each disjoint part once at its unit price: the charge equals the sum worked out by
  hand, is quantized to the money column's places, and never goes down when a call uses more tokens.

Example counts are bounded (each example is a few requests); LLMLOG_PROPERTY_EXAMPLES raises them.
"""

import os
import uuid
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import msgspec
import pytest
from django.utils import timezone
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from core.money import quantize_money
from llmlog.limits import MAX_MONEY, MAX_TOKENS, MAX_WEB_SEARCHES
from llmlog.models import TOKEN_COUNT_FIELDS, LLMUsage, ModelPrice, UsageRollup, UsageRollupState
from llmlog.pricing import TokenCounts, charge
from llmlog.rollups import build_usage_rollups
from tests.conftest import bearer

pytestmark = pytest.mark.django_db

EXAMPLES = int(os.environ.get("LLMLOG_PROPERTY_EXAMPLES", "0")) or None
DB_SETTINGS = settings(
    max_examples=EXAMPLES or 25,
    deadline=None,
    derandomize=EXAMPLES is None,
    database=None,
    # The API client and key fixtures are the same for every example; each example uses its own org
    # and transnos, so examples never see each other's records.
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
PURE_SETTINGS = settings(max_examples=EXAMPLES or 200, deadline=None, derandomize=EXAMPLES is None)

# The per-record bounds ingest holds (llmlog.limits); an input count is the sum of four parts.
MONEY_MAX = MAX_MONEY
TOKEN_MAX = MAX_TOKENS // 4
ENCODER = msgspec.json.Encoder(decimal_format="number")  # Decimal as a JSON number, digit for digit

# Text as clients send it: any character PostgreSQL text can hold (no NUL, no lone surrogate),
# quotes, markup and SQL included.
TEXT_CHARS = st.characters(exclude_categories=("Cs",), exclude_characters="\x00")
HOSTILE_WORDS = st.sampled_from(["'; DROP TABLE llmusage; --", "<script>alert(1)</script>", "%_\\", '"'])


def text(max_size: int) -> st.SearchStrategy[str]:
    return st.one_of(
        st.text(TEXT_CHARS, max_size=max_size), HOSTILE_WORDS.filter(lambda w: len(w) <= max_size)
    )


money = st.decimals(min_value=0, max_value=MONEY_MAX, places=5, allow_nan=False, allow_infinity=False)
bucket_money = st.decimals(min_value=0, max_value=MAX_MONEY, places=5)
# Below MAX_MONEY five places are at most 12 significant digits: exact in SQLite's doubles too.


def money_for_the_database() -> st.SearchStrategy[Decimal]:
    return money


json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**53), 2**53), st.text(TEXT_CHARS, max_size=20)
)
metadata = st.dictionaries(st.text(TEXT_CHARS, max_size=10), json_scalars, max_size=4)


@st.composite
def token_counts(
    draw: st.DrawFn, part_max: int = TOKEN_MAX, searches_max: int = MAX_WEB_SEARCHES
) -> dict[str, int]:
    """Counts that keep the convention: cache reads, cache writes and image tokens are parts of the
    input, reasoning a part of the output."""
    part = st.integers(0, part_max)
    cached, creation, image, uncached = draw(part), draw(part), draw(part), draw(part)
    reasoning, plain_output = draw(part), draw(part)
    return {
        "input_tokens": cached + creation + image + uncached,
        "cached_tokens": cached,
        "cache_creation_tokens": creation,
        "image_input_tokens": image,
        "output_tokens": reasoning + plain_output,
        "reasoning_tokens": reasoning,
        "web_search_count": draw(st.integers(0, searches_max)),
    }


@st.composite
def records(draw: st.DrawFn, *, org: str) -> dict[str, Any]:
    """A valid record as a gateway might send it, each optional field present or not."""
    moment = draw(
        st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2026, 1, 1), timezones=st.just(UTC))
    )
    record: dict[str, Any] = {
        "transno": f"p-{uuid.uuid4().hex}",
        "model_name": draw(st.text(TEXT_CHARS, min_size=1, max_size=150)),
        "userorgid": org,
        "use_time": draw(st.sampled_from([moment.isoformat(), int(moment.timestamp())])),
        **draw(token_counts()),
        "amount": draw(money_for_the_database()),
        "cost": draw(money_for_the_database()),
    }
    optional = {
        "userid": text(64),
        "username": text(150),
        "token_name": text(150),
        "group": text(64),
        "feature": text(64),
        "llmid": text(64),
        "ownerid": text(64),
        "provider": text(64),
        "endpoint": text(255),
        "error_message": text(500),
        "status": st.sampled_from(["success", "failed"]),
        "code": st.integers(100, 599),
        "is_stream": st.booleans(),
        "responsed_seconds": st.floats(0, 1e6, allow_nan=False),
        "metadata": metadata,
        "retry_times": st.integers(0, 10),
    }
    for name, strategy in optional.items():
        if draw(st.booleans()):
            record[name] = draw(strategy)
    return record


def post(api, key: str, payload: Any):
    return api.post(
        "/api/llmusage/", data=ENCODER.encode(payload), content_type="application/json", **bearer(key)
    )


def sent_time(value: str | int) -> datetime:
    return datetime.fromtimestamp(value, tz=UTC) if isinstance(value, int) else datetime.fromisoformat(value)


def read_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


# --- read back equal ------------------------------------------------------------------------------


@DB_SETTINGS
@given(data=st.data())
def test_any_accepted_record_reads_back_equal(api, platform_key, data):
    record = data.draw(records(org=f"org-{uuid.uuid4().hex[:8]}"))

    response = post(api, platform_key, record)

    assert response.status_code == 201, response.content[:500]
    read = api.get(f"/api/llmusage/{response.json()['id']}/", **bearer(platform_key)).json()
    for name, value in record.items():
        if name == "use_time":
            assert read_time(read[name]) == sent_time(value)
        elif name in ("amount", "cost"):
            assert isinstance(read[name], str) and Decimal(read[name]) == value
        else:
            assert read[name] == value, name
    assert read["total_tokens"] == record["input_tokens"] + record["output_tokens"]
    assert read["accounting_status"] == ("skipped" if record["amount"] == record["cost"] == 0 else "pending")


# --- money ----------------------------------------------------------------------------------------


@DB_SETTINGS
@given(
    amount=st.decimals(min_value=0, max_value=MAX_MONEY, places=10),
    as_number=st.booleans(),
)
def test_amounts_keep_every_digit_and_round_half_up_never_through_a_float(
    api, platform_key, amount, as_number
):
    sent = amount if as_number else f"{amount:f}"  # a JSON number digit for digit, or a plain string
    expected = amount.quantize(Decimal("0.00001"), rounding=ROUND_HALF_UP)

    response = post(
        api, platform_key, {"transno": uuid.uuid4().hex, "model_name": "m", "amount": sent, "cost": sent}
    )

    assert response.status_code == 201, response.content[:300]
    answer = response.json()
    assert answer["amount"] == answer["cost"] == f"{expected:.5f}"  # a string with the column's 5 places
    stored = LLMUsage.objects.get(pk=answer["id"])
    assert stored.amount == stored.cost == expected
    assert isinstance(stored.amount, Decimal)


@pytest.mark.parametrize(
    "amount", ["999999.99999", "123456.78901", "1000000.00000", "1000000.00001", "9999999999999.99999"]
)
def test_an_amount_is_stored_exactly_or_refused_never_changed(api, platform_key, amount):
    """Up to MAX_MONEY every amount is stored digit for digit, on PostgreSQL and on SQLite (whose
    doubles hold its 12 significant digits); past it, a 400 naming the field, never another amount."""
    response = post(api, platform_key, {"transno": uuid.uuid4().hex, "model_name": "m", "cost": amount})

    if Decimal(amount) > MAX_MONEY:
        assert response.status_code == 400 and "cost" in response.json()["errors"]
        assert not LLMUsage.objects.exists()
    else:
        assert response.status_code == 201 and response.json()["cost"] == amount
        assert LLMUsage.objects.get().cost == Decimal(amount)


# --- never negative -------------------------------------------------------------------------------

ANY_INT = st.one_of(st.integers(-(2**70), 2**70), st.integers(-5, 5))
ANY_MONEY = st.one_of(
    st.decimals(allow_nan=False, allow_infinity=False, places=6).map(str),
    st.sampled_from(["-0.00001", "-1", "NaN", "Infinity", "-Infinity", "1e400", "1E+13"]),
)


@DB_SETTINGS
@given(
    counts=st.fixed_dictionaries(
        {},
        optional={name: ANY_INT for name in (*TOKEN_COUNT_FIELDS, "total_tokens")},
    ),
    amount=st.one_of(st.none(), ANY_MONEY),
    cost=st.one_of(st.none(), ANY_MONEY),
)
def test_tokens_and_amounts_are_never_negative(api, platform_key, counts, amount, cost):
    transno = uuid.uuid4().hex
    record = {"transno": transno, "model_name": "m", **counts}
    if amount is not None:
        record["amount"] = amount
    if cost is not None:
        record["cost"] = cost

    response = post(api, platform_key, record)

    stored = LLMUsage.objects.filter(transno=transno).first()
    if response.status_code != 201:
        assert response.status_code == 400, response.content[:300]
        assert response.json()["errors"], response.json()  # names the field
        assert stored is None
        return
    for name in ("input_tokens", "output_tokens", "cached_tokens", "cache_creation_tokens",
                 "reasoning_tokens", "image_input_tokens", "web_search_count", "total_tokens"):  # fmt: skip
        assert getattr(stored, name) >= 0, name
    assert (
        stored.cached_tokens + stored.cache_creation_tokens + stored.image_input_tokens <= stored.input_tokens
    )
    assert stored.reasoning_tokens <= stored.output_tokens
    assert stored.total_tokens == stored.input_tokens + stored.output_tokens
    assert stored.amount is None or stored.amount >= 0
    assert stored.cost is None or stored.cost >= 0


# --- stats equal the sum of the records -----------------------------------------------------------


@DB_SETTINGS
@given(data=st.data(), with_rollups=st.booleans())
def test_stats_totals_equal_the_sum_of_the_records(api, platform_key, data, with_rollups):
    org = f"org-{uuid.uuid4().hex[:8]}"
    batch = data.draw(st.lists(records(org=org), min_size=1, max_size=12))
    now = timezone.now()
    for record in batch:  # spread over the last few days, so closed hours and the open hour both count
        record["use_time"] = (now - timedelta(minutes=data.draw(st.integers(0, 3 * 24 * 60)))).isoformat()
        record["model_name"] = data.draw(st.sampled_from(["gpt-4o", "claude", "o3"]))
        # An hourly bucket holds Decimal(18, 5) like a record: a dozen records each near that limit
        # would not fit one bucket, so amounts here stay at real-world sizes.
        record["amount"], record["cost"] = data.draw(bucket_money), data.draw(bucket_money)
    assert post(api, platform_key, batch).status_code == 201
    if with_rollups:
        build_usage_rollups()  # closed hours now come from the rollups
    else:
        # Rows only. (An earlier example's build would otherwise stand for hours that records of this
        # one landed in late: those are picked up by the next build, every 5 minutes, by design.)
        UsageRollup.objects.all().delete()
        UsageRollupState.objects.all().delete()

    stats = api.get(f"/api/llmusage/stats/?userorgid={org}", **bearer(platform_key)).json()
    count = api.get(f"/api/llmusage/count/?userorgid={org}", **bearer(platform_key)).json()

    stored = list(LLMUsage.objects.filter(userorgid=org))
    assert count["count"] == stats["requests"] == len(stored) == len(batch)
    for name in ("input_tokens", "output_tokens", "cached_tokens", "cache_creation_tokens",
                 "reasoning_tokens", "image_input_tokens", "web_search_count", "total_tokens"):  # fmt: skip
        sent = sum(r.get(name, 0) for r in batch)
        if name == "total_tokens":
            sent = sum(r["input_tokens"] + r["output_tokens"] for r in batch)
        assert stats[name] == sum(getattr(row, name) for row in stored) == sent, name
    for name in ("amount", "cost"):
        assert isinstance(stats[name], str)
        assert Decimal(stats[name]) == sum((getattr(row, name) for row in stored), Decimal(0))
        assert Decimal(stats[name]) == sum((record[name] for record in batch), Decimal(0))
        assert Decimal(stats[name]) == sum((Decimal(m[name]) for m in stats["by_model"]), Decimal(0))
        assert Decimal(stats[name]) == sum((Decimal(d[name]) for d in stats["by_day"]), Decimal(0))
    assert sum(m["requests"] for m in stats["by_model"]) == len(batch)


# --- pricing --------------------------------------------------------------------------------------

unit_price = st.decimals(min_value=0, max_value=Decimal("1000"), places=5)
optional_price = st.one_of(st.none(), unit_price)


@st.composite
def prices(draw: st.DrawFn) -> ModelPrice:
    return ModelPrice(
        model_name="m",
        input_price=draw(unit_price),
        output_price=draw(unit_price),
        cached_input_price=draw(optional_price),
        cache_creation_price=draw(optional_price),
        reasoning_price=draw(optional_price),
        image_input_price=draw(optional_price),
        request_price=draw(st.decimals(min_value=0, max_value=Decimal("10"), places=5)),
        web_search_price=draw(st.decimals(min_value=0, max_value=Decimal("10"), places=5)),
    )


def by_hand(price: ModelPrice, counts: dict[str, int]) -> Decimal:
    """The charge worked out part by part, each disjoint part once at its own unit price."""

    def unit(value: Decimal | None, fallback: Decimal) -> Decimal:
        return fallback if value is None else value

    uncached = (
        counts["input_tokens"]
        - counts["cached_tokens"]
        - counts["cache_creation_tokens"]
        - counts["image_input_tokens"]
    )
    per_million = (
        uncached * price.input_price
        + counts["cached_tokens"] * unit(price.cached_input_price, price.input_price)
        + counts["cache_creation_tokens"] * unit(price.cache_creation_price, price.input_price)
        + counts["image_input_tokens"] * unit(price.image_input_price, price.input_price)
        + (counts["output_tokens"] - counts["reasoning_tokens"]) * price.output_price
        + counts["reasoning_tokens"] * unit(price.reasoning_price, price.output_price)
    )
    total = per_million / Decimal(1_000_000) + price.request_price
    total += counts["web_search_count"] * price.web_search_price
    return total.quantize(Decimal("0.00001"), rounding=ROUND_HALF_UP)


# Small enough that any drawn price charges less than MAX_MONEY (1000 per 1M tokens, 10 per search).
small_counts = token_counts(part_max=10**7, searches_max=10**4)


@PURE_SETTINGS
@given(
    price=prices(),
    counts=small_counts,
    more=st.sampled_from(
        [
            "cached_tokens",
            "cache_creation_tokens",
            "image_input_tokens",
            "reasoning_tokens",
            "web_search_count",
            "input_tokens",
            "output_tokens",
        ]  # fmt: skip
    ),
    extra=st.integers(1, 10**9),
)
def test_charge_is_each_part_at_its_price_quantized_and_grows_with_usage(price, counts, more, extra):
    amount = charge(price, TokenCounts(**counts))

    assert amount == by_hand(price, counts)
    assert amount >= 0
    assert amount == quantize_money(amount) and amount.as_tuple().exponent == -5

    bigger = dict(counts)
    bigger[more] += extra
    if more in ("cached_tokens", "cache_creation_tokens", "image_input_tokens"):
        bigger["input_tokens"] += extra  # a part of the prompt is more prompt
    if more == "reasoning_tokens":
        bigger["output_tokens"] += extra
    assert charge(price, TokenCounts(**bigger)) >= amount


@DB_SETTINGS
@given(data=st.data())
def test_a_record_without_amount_is_charged_what_its_price_says(api, platform_key, data):
    model = f"m-{uuid.uuid4().hex[:8]}"
    sale, cost = data.draw(prices()), data.draw(prices())
    for price, kind in ((sale, "sale"), (cost, "cost")):
        price.model_name, price.kind = model, kind
        price.effective_from = datetime(2000, 1, 1, tzinfo=UTC)
        price.save()
    counts = data.draw(small_counts)
    assume(sum(counts.values()) > 0)

    response = post(api, platform_key, {"transno": uuid.uuid4().hex, "model_name": model, **counts})

    assert response.status_code == 201, response.content[:300]
    answer = response.json()
    assert Decimal(answer["amount"]) == by_hand(sale, counts)
    assert Decimal(answer["cost"]) == by_hand(cost, counts)
    assert answer["price"]["sale"]["input_price"] == str(sale.input_price)
