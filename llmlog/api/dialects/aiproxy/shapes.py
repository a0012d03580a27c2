"""AI Proxy's answers: a record as its log (price breakdown, request detail, relay mode) and the facets."""

from dataclasses import replace
from decimal import Decimal
from typing import Any

from llmlog.api.dialects.aiproxy.params import FACET_SAMPLE
from llmlog.api.dialects.common import (
    gateway_number,
    ioinfo_side,
    iso,
    money_number,
)
from llmlog.models import UsageStatus
from llmlog.queries import UsageQuery
from llmlog.selectors.records import usage_facets

# AI Proxy's relay modes (core/relay/mode), by the endpoint's path; the first match wins.
MODES = (
    ("/chat/completions", 1),
    ("/completions", 2),
    ("/embeddings", 3),
    ("/moderations", 4),
    ("/images/generations", 5),
    ("/images/edits", 6),
    ("/audio/speech", 7),
    ("/audio/transcriptions", 8),
    ("/audio/translations", 9),
    ("/rerank", 10),
    ("/messages", 12),
    ("/responses", 16),
    (":generateContent", 21),
    (":streamGenerateContent", 21),
)
TOKEN_KINDS = (
    "cache_creation_tokens",
    "cached_tokens",
    "image_input_tokens",
    "input_tokens",
    "output_tokens",
    "reasoning_tokens",
    "total_tokens",
    "web_search_count",
)
ITEM_COLUMNS = (
    "id",
    "seq",
    "transno",
    "userid",
    "userorgid",
    "use_time",
    "created_at",
    "status",
    "code",
    "error_message",
    "endpoint",
    "request_ip",
    "metadata",
    "model_name",
    "price",
    "ioinfo",
    "retry_times",
    "token_id",
    "token_name",
    "channel_id",
    "responsed_seconds",
    "amount",
    *TOKEN_KINDS,
)
PER_MILLION = 1_000_000


def relay_mode(endpoint: str) -> int:
    path = endpoint.split("?", 1)[0].rstrip("/")
    for suffix, mode in MODES:
        if path.endswith(suffix):
            return mode
    return 0


def price_breakdown(price: dict | None) -> dict[str, Any]:
    """The sale unit prices applied to the record, in AI Proxy's names; all 0 when the gateway sent the
    amount itself (llmlog then applied no price). A price left empty falls back as pricing does
    (cache reads, cache writes and images at the input price, reasoning at the output price)."""
    sale = (price or {}).get("sale") or {}

    def unit_price(name: str, fallback: str | None = None) -> float:
        value = sale.get(name)
        if value is None and fallback:
            value = sale.get(fallback)
        return float(Decimal(value)) if value is not None else 0

    per_tokens = PER_MILLION if sale else 0
    return {
        "cache_creation_price": unit_price("cache_creation_price", "input_price"),
        "cache_creation_price_unit": per_tokens,
        "cached_price": unit_price("cached_input_price", "input_price"),
        "cached_price_unit": per_tokens,
        "image_input_price": unit_price("image_input_price", "input_price"),
        "image_input_price_unit": per_tokens,
        "input_price": unit_price("input_price"),
        "input_price_unit": per_tokens,
        "output_price": unit_price("output_price"),
        "output_price_unit": per_tokens,
        "per_request_price": unit_price("request_price"),
        "thinking_mode_output_price": unit_price("reasoning_price", "output_price"),
        "thinking_mode_output_price_unit": per_tokens,
        "web_search_price": unit_price("web_search_price"),
        "web_search_price_unit": 1 if sale else 0,
    }


def request_detail(row: dict[str, Any]) -> dict[str, Any]:
    """The kept request and response; empty bodies when none was kept (an object always, as typed)."""
    request_body, request_cut = ioinfo_side(row["ioinfo"], "request")
    response_body, response_cut = ioinfo_side(row["ioinfo"], "response")
    return {
        "id": row["seq"] or 0,
        "log_id": row["seq"] or 0,
        "request_body": request_body or "",
        "request_body_truncated": request_cut,
        "response_body": response_body or "",
        "response_body_truncated": response_cut,
    }


def log_item(row: dict[str, Any]) -> dict[str, Any]:
    """A record as AI Proxy's log."""
    code = row["code"]
    if code is None:
        # No HTTP status reported: a successful call answered 200, a failed one is unknown (0).
        code = 200 if row["status"] == UsageStatus.SUCCESS else 0
    ttfb = row["responsed_seconds"]
    return {
        "channel": gateway_number(row["channel_id"]),
        "code": code,
        "content": row["error_message"],
        "created_at": iso(row["created_at"]),
        "endpoint": row["endpoint"],
        "group": row["userorgid"],
        "id": row["seq"] or 0,  # null only on SQLite, between an insert and its trigger
        "ip": row["request_ip"] or "",
        "metadata": row["metadata"] or {},
        "mode": relay_mode(row["endpoint"]),
        "model": row["model_name"],
        "price": price_breakdown(row["price"]),
        "request_at": iso(row["use_time"]),
        "request_detail": request_detail(row),
        "request_id": row["transno"],
        "retry_at": "",  # llmlog keeps no retry time; text, as the seed types it
        "retry_times": row["retry_times"],
        "token_id": gateway_number(row["token_id"]),
        "token_name": row["token_name"],
        "ttfb_milliseconds": 0 if ttfb is None else round(ttfb * 1000),
        "usage": {kind: row[kind] for kind in TOKEN_KINDS},
        "used_amount": money_number(row["amount"]) or 0,
        "user": row["userid"],
    }


def log_facets(query: UsageQuery) -> dict[str, list]:
    """models, token_names and channels met in the newest FACET_SAMPLE records of `query`'s org and time
    range, whatever its model, token and code filters."""
    in_range = replace(query, model_name=None, token_name=None, status=None)
    combinations = usage_facets(query=in_range, sample=FACET_SAMPLE)
    channels = {gateway_number(channel) for _, _, channel in combinations if channel}
    return {
        "models": sorted({model for model, _, _ in combinations}),
        "token_names": sorted({token for _, token, _ in combinations if token}),
        # integers, as AI Proxy's channel ids; a channel whose id is not a whole number is 0, as in its logs
        "channels": sorted(channels),
    }
