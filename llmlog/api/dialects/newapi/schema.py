"""new-api's log module in OpenAPI: the answers' schemas and the parameters, as new-api documents them."""

from typing import Any

from drf_spectacular.utils import OpenApiParameter, OpenApiResponse

from llmlog.api.dialects.common import NOT_BLANK, timestamp_schema
from llmlog.api.dialects.newapi.params import DEFAULT_PAGE_SIZE, KNOWN_LOG_TYPES
from llmlog.api.dialects.paging import PageParams

TAG = "dialect: new-api"
ITEM_SCHEMA = {
    "type": "object",
    "properties": {
        "id": {"type": "integer", "format": "int64", "description": "the record's seq"},
        "user_id": {"type": "integer", "format": "int64", "description": "the gateway's, or 0"},
        "created_at": {"type": "integer", "description": "unix seconds (the call's start)"},
        "type": {"type": "integer", "enum": [2, 4], "description": "2 consume, 4 error"},
        "content": {"type": "string"},
        "username": {"type": "string"},
        "token_name": {"type": "string"},
        "model_name": {"type": "string"},
        "quota": {"type": "integer", "description": "the amount charged, in quota units"},
        "prompt_tokens": {"type": "integer"},
        "completion_tokens": {"type": "integer"},
        "use_time": {"type": "integer", "description": "duration, seconds"},
        "is_stream": {"type": "boolean"},
        "channel_id": {"type": "integer", "format": "int64", "description": "the gateway's, or 0"},
        "channel_name": {"type": "string"},
        "token_id": {"type": "integer", "format": "int64", "description": "the gateway's, or 0"},
        "group": {"type": "string"},
        "ip": {"type": "string"},
        "other": {"type": "string", "description": "JSON text: request_id, frt (ms), cache_tokens, ..."},
    },
}


def envelope(data: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {"success": {"type": "boolean"}, "message": {"type": "string"}, "data": data},
    }


ERROR = OpenApiResponse(
    envelope({"type": "object", "nullable": True}),
    "success false; the message names the bad parameter or the missing right.",
)
PAGE_SCHEMA = envelope(
    {
        "type": "object",
        "properties": {
            "items": {"type": "array", "items": ITEM_SCHEMA},
            "total": {"type": "integer"},
            "page": {"type": "integer"},
            "page_size": {"type": "integer"},
        },
    }
)
LIST_SCHEMA = envelope({"type": "array", "items": ITEM_SCHEMA})
STAT_SCHEMA = envelope(
    {
        "type": "object",
        "properties": {
            "quota": {"type": "integer", "description": "amount charged in the range, in quota units"},
            "rpm": {"type": "integer", "description": "successful calls in the last 60 s"},
            "tpm": {"type": "integer", "description": "their prompt + completion tokens"},
        },
    }
)
FILTER_PARAMETERS = [
    OpenApiParameter(
        "type",
        {"type": "integer", "enum": list(KNOWN_LOG_TYPES)},
        description="Log type: 2 consume (success), 4 error (failed); 0 or none: all. "
        "1 top-up, 3 manage and 5 system are not usage records: they find nothing.",
    ),
    OpenApiParameter(
        "start_timestamp", timestamp_schema("s"), description="From this time on, unix seconds."
    ),
    OpenApiParameter(
        "end_timestamp", timestamp_schema("s"), description="Up to this time (inclusive), unix seconds."
    ),
    OpenApiParameter("username", str),
    OpenApiParameter("token_name", str),
    OpenApiParameter("model_name", str),
    OpenApiParameter("channel", str, description="Channel id."),
    OpenApiParameter("group", str),
]
PAGING = PageParams(
    page="p",
    size="page_size",
    default_size=DEFAULT_PAGE_SIZE,
    narrow_with="start_timestamp and end_timestamp",
)
PAGE_PARAMETERS = PAGING.parameters()
KEYWORD = OpenApiParameter(
    "keyword", NOT_BLANK, required=True, description="transno, user, org, model, token, error."
)
