"""AI Proxy's log search in OpenAPI: the answer's schema and the parameters, as AI Proxy documents them."""

from drf_spectacular.utils import OpenApiParameter, OpenApiResponse

from llmlog.api.dialects.aiproxy.params import CODE_TYPES, DEFAULT_PER_PAGE
from llmlog.api.dialects.aiproxy.shapes import TOKEN_KINDS, price_breakdown
from llmlog.api.dialects.common import timestamp_schema
from llmlog.api.dialects.paging import PageParams

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
PAGING = PageParams(
    page="page",
    size="per_page",
    default_size=DEFAULT_PER_PAGE,
    narrow_with="start_timestamp and end_timestamp",
)
PARAMETERS = [
    *PAGING.parameters(),
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
