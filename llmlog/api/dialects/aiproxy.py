"""AI Proxy's log search: `GET /api/logs/search` and `GET /api/log/{group}/search`.

As AI Proxy documents it (seeds/aiproxy-log-search-api.txt): parameters `page` (from 1), `per_page`
(default 10, at most 100), `model_name`, `token_name`, `start_timestamp` / `end_timestamp` in unix
milliseconds (inclusive), `code_type` = all | success | error; the answer is
`{data: {logs, total, models, token_names, channels}, message, success}`.

An AI Proxy group is the tenant that owns the tokens and pays: an llmlog org. So `{group}` is a
`userorgid` (an org key may ask for its own org only; another org's group is a 404), a log's `group`
is its org, and `/api/logs/search` is every record the caller may see (a platform key: every org's;
an org key: its org's). A group named `self` cannot be asked for this way: `/api/log/self/search` is
new-api's search of the caller's own records.

A log carries its usage by token kind, its price breakdown (the sale unit prices applied, per
`*_unit` tokens: llmlog's prices are per 1M tokens), `used_amount` (the amount charged),
`ttfb_milliseconds` (time to first byte), `request_at` (the call's start) and `created_at` (when
llmlog received it), and `request_detail`: the kept request and response with a truncated flag each.
Ids are integers, as AI Proxy's: a log's `id` (and its request_detail's `id` and `log_id`) is the
record's `seq`; `channel` and `token_id` are the gateway's ids when they are whole numbers, 0 otherwise
(the token's name is in `token_name`); `channels` lists integers.
`mode` is AI Proxy's relay mode, read from the endpoint (1 chat completions, 2 completions,
3 embeddings, ... 12 Anthropic messages, 16 responses; 0 unknown).

The facets `models`, `token_names` and `channels` list the values met in the group's (or caller's)
newest FACET_SAMPLE records of the time range, whatever the model, token and code filters: a bounded
read along the (userorgid, use_time) index, so they stay cheap on a table of any size.
"""

from dataclasses import replace
from datetime import timedelta
from decimal import Decimal
from typing import Any

from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import exceptions
from rest_framework.request import Request
from rest_framework.response import Response

from llmlog.api.dialects.common import (
    MAX_PAGE_SIZE,
    DialectView,
    bad_input,
    check_page_depth,
    gateway_number,
    int_param,
    ioinfo_side,
    iso,
    money_number,
    time_param,
    timestamp_schema,
)
from llmlog.models import UsageStatus
from llmlog.queries import MAX_PAGE_DEPTH, UsageQuery
from llmlog.selectors import usage_count, usage_facets, usage_page

DEFAULT_PER_PAGE = 10
# Facets are the distinct values of this many newest records of the range (see the module docstring):
# enough to hold every model, token and channel in recent use, small enough that the read (one index
# range plus a heap fetch per record) stays a few milliseconds however big the table grows.
FACET_SAMPLE = 5_000
CODE_TYPES: dict[str, str | None] = {"all": None, "success": UsageStatus.SUCCESS, "error": UsageStatus.FAILED}
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


def log_query(params: Any, *, org: str) -> UsageQuery:
    """The records AI Proxy's filter parameters name, in `org` ("" = every org)."""
    code_type = params.get("code_type", "").strip() or "all"
    if code_type not in CODE_TYPES:
        raise bad_input("code_type", f"Expected one of: {', '.join(CODE_TYPES)}; got {code_type!r}.")
    start = time_param(params, "start_timestamp", unit="ms")
    end = time_param(params, "end_timestamp", unit="ms")
    if start and end and end < start:
        raise bad_input("end_timestamp", "Must not be before start_timestamp.")
    equal = {name: params.get(name, "").strip() for name in ("model_name", "token_name")}
    return UsageQuery(
        org=org,
        start=start,
        end=end + timedelta(milliseconds=1) if end else None,  # inclusive to the millisecond, as AI Proxy's
        status=CODE_TYPES[code_type],
        **{name: value for name, value in equal.items() if value},
    )


# --- OpenAPI --------------------------------------------------------------------------------------

TAG = "dialect: AI Proxy"
NUMBER = {"type": "number"}
INTEGER = {"type": "integer"}
STRING = {"type": "string"}
LOG_SCHEMA = {
    "type": "object",
    "properties": {
        "channel": {**INTEGER, "description": "the gateway's channel id, or 0 when it is not a number"},
        "code": INTEGER,
        "content": STRING,
        "created_at": {"type": "string", "format": "date-time"},
        "endpoint": STRING,
        "group": STRING,
        "id": {**INTEGER, "description": "the record's seq"},
        "ip": STRING,
        "metadata": {"type": "object", "additionalProperties": True},
        "mode": INTEGER,
        "model": STRING,
        "price": {
            "type": "object",
            "properties": {name: NUMBER for name in price_breakdown({"sale": {"input_price": "0"}})},
        },
        "request_at": {"type": "string", "format": "date-time"},
        "request_detail": {
            "type": "object",
            "properties": {
                "id": INTEGER,
                "log_id": INTEGER,
                "request_body": STRING,
                "request_body_truncated": {"type": "boolean"},
                "response_body": STRING,
                "response_body_truncated": {"type": "boolean"},
            },
        },
        "request_id": STRING,
        "retry_at": STRING,
        "retry_times": INTEGER,
        "token_id": {**INTEGER, "description": "the gateway's token id, or 0 when it is not a number"},
        "token_name": STRING,
        "ttfb_milliseconds": INTEGER,
        "usage": {"type": "object", "properties": dict.fromkeys(TOKEN_KINDS, INTEGER)},
        "used_amount": NUMBER,
        "user": STRING,
    },
}
SEARCH_SCHEMA = {
    "type": "object",
    "properties": {
        "data": {
            "type": "object",
            "properties": {
                "logs": {"type": "array", "items": LOG_SCHEMA},
                "total": INTEGER,
                "models": {"type": "array", "items": STRING},
                "token_names": {"type": "array", "items": STRING},
                "channels": {"type": "array", "items": INTEGER},
            },
        },
        "message": STRING,
        "success": {"type": "boolean"},
    },
}
ERROR = OpenApiResponse(
    {
        "type": "object",
        "properties": {
            "data": {"type": "object", "nullable": True},
            "message": STRING,
            "success": {"type": "boolean"},
        },
    },
    "success false; the message names the bad parameter.",
)
PARAMETERS = [
    OpenApiParameter(
        "page",
        {"type": "integer", "minimum": 1, "maximum": MAX_PAGE_DEPTH},
        description=f"Page, from 1; page × per_page ≤ {MAX_PAGE_DEPTH}.",
    ),
    OpenApiParameter(
        "per_page",
        {"type": "integer", "minimum": 1, "maximum": MAX_PAGE_SIZE},
        description=f"Default {DEFAULT_PER_PAGE}, at most {MAX_PAGE_SIZE}.",
    ),
    OpenApiParameter("model_name", str),
    OpenApiParameter("token_name", str),
    OpenApiParameter(
        "start_timestamp", timestamp_schema("ms"), description="From this time on, unix milliseconds."
    ),
    OpenApiParameter(
        "end_timestamp", timestamp_schema("ms"), description="Up to this time (inclusive), unix milliseconds."
    ),
    OpenApiParameter("code_type", str, enum=list(CODE_TYPES), description="Default all."),
]


# --- views ----------------------------------------------------------------------------------------


class AiProxySearchView(DialectView):
    """`/api/logs/search`: every record the caller may see."""

    def error_body(self, message: str, status_code: int) -> dict[str, Any]:
        return {"data": None, "message": message, "success": False}

    @extend_schema(
        summary="AI Proxy: search logs",
        operation_id="aiproxy_logs_search",
        description="Every record the caller may see (a platform key: every org's).",
        tags=[TAG],
        parameters=PARAMETERS,
        responses={200: OpenApiResponse(SEARCH_SCHEMA), 400: ERROR},
    )
    def get(self, request: Request) -> Response:
        return self.search(request, org=self.org(request))

    def search(self, request: Request, org: str) -> Response:
        params = request.query_params
        page = int_param(params, "page", default=1, minimum=1)
        per_page = int_param(params, "per_page", default=DEFAULT_PER_PAGE, minimum=1, maximum=MAX_PAGE_SIZE)
        offset = (page - 1) * per_page
        check_page_depth(
            offset=offset, size=per_page, param="page", narrow_with="start_timestamp and end_timestamp"
        )
        query = log_query(params, org=org)
        count = usage_count(query=query)  # every record of every org: an estimate, said so
        rows = usage_page(query=query, offset=offset, limit=per_page, columns=ITEM_COLUMNS)
        data: dict[str, Any] = {
            "logs": [log_item(row) for row in rows],
            "total": count["count"],
            **log_facets(query),
        }
        if count["estimated"]:
            data["total_is_estimate"] = True
        return Response({"data": data, "message": "", "success": True})


class AiProxyGroupSearchView(AiProxySearchView):
    """`/api/log/{group}/search`: one group's (org's) records."""

    @extend_schema(
        summary="AI Proxy: search a group's logs",
        operation_id="aiproxy_group_logs_search",
        description="A group is an org (userorgid). An org key may ask for its own group only.",
        tags=[TAG],
        parameters=[OpenApiParameter("group", str, OpenApiParameter.PATH, description="The org (userorgid).")]
        + PARAMETERS,
        responses={200: OpenApiResponse(SEARCH_SCHEMA), 400: ERROR, 404: ERROR},
    )
    def get(self, request: Request, group: str) -> Response:
        org = self.org(request)
        if org and group != org:
            raise exceptions.NotFound(f"Group {group!r} not found.")
        return self.search(request, org=group)
