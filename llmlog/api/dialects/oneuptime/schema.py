"""OneUptime's LLM Log API in OpenAPI: select, query, sort, items, operations."""

from typing import Any

from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema

from llmlog.api.dialects.common import (
    MAX_PAGE_SIZE,
)
from llmlog.api.dialects.oneuptime.fields import DEFAULT_LIMIT, FIELDS, QUERYABLE, SORTABLE
from llmlog.queries import (
    MAX_PAGE_DEPTH,
)

# The names each object may hold are listed (another name is a 400); null is the same as leaving it out.
SELECT_SCHEMA = {
    "type": "object",
    "nullable": True,
    "description": "Fields to answer besides _id, each set to true (a relation: true or a sub-select).",
    "properties": {name: {} for name in FIELDS},
    "additionalProperties": False,
    "example": {"costInUSDCents": True, "projectId": True, "status": True, "totalTokens": True},
}
QUERY_SCHEMA = {
    "type": "object",
    "nullable": True,
    "description": 'Field -> value, null, or an operator such as {"_type": "GreaterThan", "value": 100}.',
    "properties": {name: {} for name in QUERYABLE},
    "additionalProperties": False,
    "example": {"status": "Success"},
}
SORT_SCHEMA = {
    "type": "object",
    "nullable": True,
    "description": f'Field -> -1 or 1 (or "DESC" or "ASC"). Sortable: {", ".join(SORTABLE)}.',
    "properties": {
        name: {"oneOf": [{"type": "integer", "enum": [-1, 1]}, {"type": "string"}]} for name in SORTABLE
    },
    "additionalProperties": False,
    "example": {"createdAt": -1},
}
ITEM_SCHEMA = {
    "type": "object",
    "properties": {
        "_id": {"type": "string", "format": "uuid"},
        "createdAt": {"type": "string", "format": "date-time"},
        "updatedAt": {"type": "string", "format": "date-time"},
        "projectId": {"type": "string"},
        "llmProviderId": {"type": "string"},
        "llmProviderName": {"type": "string"},
        "llmType": {"type": "string"},
        "modelName": {"type": "string"},
        "isGlobalProvider": {"type": "boolean"},
        "inputTokens": {"type": "integer"},
        "outputTokens": {"type": "integer"},
        "totalTokens": {"type": "integer"},
        "costInUSDCents": {"type": "number"},
        "wasBilled": {"type": "boolean"},
        "status": {"type": "string", "enum": ["Success", "Error"]},
        "statusMessage": {"type": "string"},
        "feature": {"type": "string"},
        "requestPrompt": {"type": "string", "nullable": True},
        "responsePreview": {"type": "string", "nullable": True},
        "incidentId": {"type": "string", "nullable": True},
        "alertId": {"type": "string", "nullable": True},
        "scheduledMaintenanceId": {"type": "string", "nullable": True},
        "userId": {"type": "string"},
        "requestStartedAt": {"type": "string", "format": "date-time"},
        "requestCompletedAt": {"type": "string", "format": "date-time", "nullable": True},
        "durationMs": {"type": "integer", "nullable": True},
    },
}
ERROR_SCHEMA = {"type": "object", "properties": {"message": {"type": "string"}}}
JSON_PARAM_NOTE = "On GET: JSON text; on POST send it in the body."


def list_schema(method: str) -> Any:
    parameters = [
        OpenApiParameter(
            "skip",
            {"type": "integer", "minimum": 0, "maximum": MAX_PAGE_DEPTH},
            description=f"Records to skip; skip + limit ≤ {MAX_PAGE_DEPTH}.",
        ),
        OpenApiParameter(
            "limit",
            {"type": "integer", "minimum": 0, "maximum": MAX_PAGE_SIZE},
            description=f"Records to return, default {DEFAULT_LIMIT}, at most {MAX_PAGE_SIZE}.",
        ),
    ]
    if method == "GET":
        parameters += [
            OpenApiParameter(name, str, description=f"{name} as JSON. {JSON_PARAM_NOTE}")
            for name in ("select", "query", "sort")
        ]
    return extend_schema(
        summary=f"OneUptime: list LLM logs ({method})",
        operation_id=f"oneuptime_llm_log_get_list_{method.lower()}",
        tags=["dialect: OneUptime"],
        parameters=parameters,
        request=None
        if method == "GET"
        else {
            "application/json": {
                "type": "object",
                "properties": {"select": SELECT_SCHEMA, "query": QUERY_SCHEMA, "sort": SORT_SCHEMA},
            }
        },
        responses={
            200: OpenApiResponse(
                {
                    "type": "object",
                    "properties": {
                        "count": {"type": "integer"},
                        "limit": {"type": "integer"},
                        "skip": {"type": "integer"},
                        "data": {"type": "array", "items": ITEM_SCHEMA},
                    },
                },
                "`count` is every matching record; `data` the page.",
            ),
            400: OpenApiResponse(ERROR_SCHEMA, "Bad select/query/sort/skip/limit; the message names it."),
        },
    )


def item_schema(method: str) -> Any:
    return extend_schema(
        summary=f"OneUptime: one LLM log ({method})",
        operation_id=f"oneuptime_llm_log_get_item_{method.lower()}",
        tags=["dialect: OneUptime"],
        parameters=[OpenApiParameter("id", str, OpenApiParameter.PATH, description="The record's id (UUID).")]
        + (
            [OpenApiParameter("select", str, description=f"select as JSON. {JSON_PARAM_NOTE}")]
            if method == "GET"
            else []
        ),
        request=None
        if method == "GET"
        else {"application/json": {"type": "object", "properties": {"select": SELECT_SCHEMA}}},
        responses={
            200: OpenApiResponse(ITEM_SCHEMA, "_id and the selected fields."),
            400: OpenApiResponse(ERROR_SCHEMA, "Not a UUID, or an unknown select field."),
            404: OpenApiResponse(ERROR_SCHEMA, "No such record in the caller's project (org)."),
        },
    )
