"""The seeds are the schema: every dialect answer the tests produce is checked against the seed's types.

For each dialect operation, a JSON Schema written from its seed (../shared/seeds/: new-api's log module,
AI Proxy's log search, OneUptime's LLM Log API): the envelope, every field's JSON type, which fields are
always present, the error answer. And a client as a typed program would write one: msgspec Structs with
the seed's types, decoding each answer with strict=True (no int for a str, no str for an int, no null
where the seed has a value).

`dialect_answers_match_the_seeds` (autouse where imported) checks every answer of a dialect path that
goes through DRF's test client, success or error, with both: a test module that imports it validates
all its dialect traffic without a line more.
"""

import re
from typing import Any

import jsonschema
import msgspec
import pytest
from rest_framework.test import APIClient

INTEGER = {"type": "integer"}
NUMBER = {"type": "number"}
STRING = {"type": "string"}
BOOLEAN = {"type": "boolean"}


def obj(properties: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": properties,
        "required": list(properties) if required is None else required,
    }


# --- new-api (seeds/new-api-log-module.txt) ---------------------------------------------------------

NEWAPI_ITEM = obj(
    {
        "id": INTEGER,
        "user_id": INTEGER,
        "created_at": INTEGER,
        "type": INTEGER,
        "content": STRING,
        "username": STRING,
        "token_name": STRING,
        "model_name": STRING,
        "quota": INTEGER,
        "prompt_tokens": INTEGER,
        "completion_tokens": INTEGER,
        "use_time": INTEGER,
        "is_stream": BOOLEAN,
        "channel_id": INTEGER,
        "channel_name": STRING,
        "token_id": INTEGER,
        "group": STRING,
        "ip": STRING,
        "other": STRING,
    }
)


def newapi_ok(data: dict[str, Any]) -> dict[str, Any]:
    return obj({"success": {"const": True}, "message": STRING, "data": data})


NEWAPI_PAGE = newapi_ok(
    obj(
        {
            "items": {"type": "array", "items": NEWAPI_ITEM},
            "total": INTEGER,
            "page": INTEGER,
            "page_size": INTEGER,
            "total_is_estimate": BOOLEAN,
        },
        required=["items", "total", "page", "page_size"],
    )
)
NEWAPI_LIST = newapi_ok({"type": "array", "items": NEWAPI_ITEM})
NEWAPI_STAT = newapi_ok(obj({"quota": INTEGER, "rpm": INTEGER, "tpm": INTEGER}))
NEWAPI_DELETED = newapi_ok(INTEGER)
NEWAPI_ERROR = obj({"success": {"const": False}, "message": STRING})

# --- AI Proxy (seeds/aiproxy-log-search-api.txt) ----------------------------------------------------

PRICE_NAMES = (
    "cache_creation_price", "cache_creation_price_unit", "cached_price", "cached_price_unit",
    "image_input_price", "image_input_price_unit", "input_price", "input_price_unit", "output_price",
    "output_price_unit", "per_request_price", "thinking_mode_output_price",
    "thinking_mode_output_price_unit", "web_search_price", "web_search_price_unit",
)  # fmt: skip
USAGE_NAMES = (
    "cache_creation_tokens", "cached_tokens", "image_input_tokens", "input_tokens", "output_tokens",
    "reasoning_tokens", "total_tokens", "web_search_count",
)  # fmt: skip
AIPROXY_LOG = obj(
    {
        "channel": INTEGER,
        "code": INTEGER,
        "content": STRING,
        "created_at": STRING,
        "endpoint": STRING,
        "group": STRING,
        "id": INTEGER,
        "ip": STRING,
        "metadata": {"type": "object"},
        "mode": INTEGER,
        "model": STRING,
        "price": obj(dict.fromkeys(PRICE_NAMES, NUMBER)),
        "request_at": STRING,
        "request_detail": obj(
            {
                "id": INTEGER,
                "log_id": INTEGER,
                "request_body": STRING,
                "request_body_truncated": BOOLEAN,
                "response_body": STRING,
                "response_body_truncated": BOOLEAN,
            }
        ),
        "request_id": STRING,
        "retry_at": STRING,
        "retry_times": INTEGER,
        "token_id": INTEGER,
        "token_name": STRING,
        "ttfb_milliseconds": INTEGER,
        "usage": obj(dict.fromkeys(USAGE_NAMES, INTEGER)),
        "used_amount": NUMBER,
        "user": STRING,
    }
)
AIPROXY_SEARCH = obj(
    {
        "data": obj(
            {
                "logs": {"type": "array", "items": AIPROXY_LOG},
                "total": INTEGER,
                "models": {"type": "array", "items": STRING},
                "token_names": {"type": "array", "items": STRING},
                "channels": {"type": "array", "items": INTEGER},
                "total_is_estimate": BOOLEAN,
            },
            required=["logs", "total", "models", "token_names", "channels"],
        ),
        "message": STRING,
        "success": {"const": True},
    }
)
AIPROXY_ERROR = obj({"data": {"type": "null"}, "message": STRING, "success": {"const": False}})

# --- OneUptime (seeds/oneuptime-llm-log-api.txt) ----------------------------------------------------


def optional(schema: dict[str, Any]) -> dict[str, Any]:
    """A field the seed does not mark required: its type, or null when the record has none."""
    return {"anyOf": [schema, {"type": "null"}]}


RELATION = optional(obj({"_id": STRING}))
ONEUPTIME_ITEM = obj(
    {
        "_id": STRING,  # Object ID
        "createdAt": STRING,  # Date
        "updatedAt": STRING,
        "project": RELATION,
        "projectId": STRING,  # required in the seed
        "llmProvider": RELATION,
        "llmProviderId": optional(STRING),
        "llmProviderName": optional(STRING),  # Text
        "llmType": optional(STRING),
        "modelName": optional(STRING),
        "isGlobalProvider": BOOLEAN,  # required
        "inputTokens": optional(NUMBER),
        "outputTokens": optional(NUMBER),
        "totalTokens": NUMBER,  # required
        "costInUSDCents": NUMBER,  # required
        "wasBilled": BOOLEAN,  # required
        "status": STRING,  # Text, required
        "statusMessage": optional(STRING),
        "feature": optional(STRING),
        "requestPrompt": optional(STRING),
        "responsePreview": optional(STRING),
        "incident": RELATION,
        "incidentId": optional(STRING),
        "alert": RELATION,
        "alertId": optional(STRING),
        "scheduledMaintenance": RELATION,
        "scheduledMaintenanceId": optional(STRING),
        "user": RELATION,
        "userId": optional(STRING),
        "requestStartedAt": optional(STRING),
        "requestCompletedAt": optional(STRING),
        "durationMs": optional(NUMBER),
    },
    required=["_id"],  # "by default only the ID is returned; select the others"
)
ONEUPTIME_ITEM["additionalProperties"] = False
ONEUPTIME_LIST = obj(
    {
        "count": INTEGER,
        "limit": INTEGER,
        "skip": INTEGER,
        "data": {"type": "array", "items": ONEUPTIME_ITEM},
        "countIsEstimate": BOOLEAN,
    },
    required=["count", "limit", "skip", "data"],
)
ONEUPTIME_COUNT = obj({"count": INTEGER, "countIsEstimate": BOOLEAN}, required=["count"])
ONEUPTIME_ERROR = obj({"message": STRING})

# --- the strict-typed clients: the seeds' types as a Go or TypeScript client declares them ------------


class NewApiItem(msgspec.Struct, forbid_unknown_fields=True):
    id: int
    user_id: int
    created_at: int
    type: int
    content: str
    username: str
    token_name: str
    model_name: str
    quota: int
    prompt_tokens: int
    completion_tokens: int
    use_time: int
    is_stream: bool
    channel_id: int
    channel_name: str
    token_id: int
    group: str
    ip: str
    other: str


class NewApiPage(msgspec.Struct):
    items: list[NewApiItem]
    total: int
    page: int
    page_size: int


class NewApiStat(msgspec.Struct, forbid_unknown_fields=True):
    quota: int
    rpm: int
    tpm: int


class NewApiPageAnswer(msgspec.Struct, forbid_unknown_fields=True):
    success: bool
    message: str
    data: NewApiPage


class NewApiListAnswer(msgspec.Struct, forbid_unknown_fields=True):
    success: bool
    message: str
    data: list[NewApiItem]


class NewApiStatAnswer(msgspec.Struct, forbid_unknown_fields=True):
    success: bool
    message: str
    data: NewApiStat


class NewApiDeleteAnswer(msgspec.Struct, forbid_unknown_fields=True):
    success: bool
    message: str
    data: int


class NewApiError(msgspec.Struct, forbid_unknown_fields=True):
    success: bool
    message: str


class AiProxyRequestDetail(msgspec.Struct, forbid_unknown_fields=True):
    id: int
    log_id: int
    request_body: str
    request_body_truncated: bool
    response_body: str
    response_body_truncated: bool


AiProxyPrice = msgspec.defstruct(
    "AiProxyPrice", [(name, float) for name in PRICE_NAMES], forbid_unknown_fields=True
)
AiProxyUsage = msgspec.defstruct(
    "AiProxyUsage", [(name, int) for name in USAGE_NAMES], forbid_unknown_fields=True
)


class AiProxyLog(msgspec.Struct, forbid_unknown_fields=True):
    channel: int
    code: int
    content: str
    created_at: str
    endpoint: str
    group: str
    id: int
    ip: str
    metadata: dict[str, Any]
    mode: int
    model: str
    price: AiProxyPrice  # type: ignore[valid-type]
    request_at: str
    request_detail: AiProxyRequestDetail
    request_id: str
    retry_at: str
    retry_times: int
    token_id: int
    token_name: str
    ttfb_milliseconds: int
    usage: AiProxyUsage  # type: ignore[valid-type]
    used_amount: float
    user: str


class AiProxyData(msgspec.Struct):
    logs: list[AiProxyLog]
    total: int
    models: list[str]
    token_names: list[str]
    channels: list[int]


class AiProxyAnswer(msgspec.Struct, forbid_unknown_fields=True):
    data: AiProxyData
    message: str
    success: bool


class AiProxyError(msgspec.Struct, forbid_unknown_fields=True):
    data: None
    message: str
    success: bool


class OneUptimeRelation(msgspec.Struct, forbid_unknown_fields=True, rename={"id_": "_id"}):
    id_: str


class OneUptimeItem(msgspec.Struct, forbid_unknown_fields=True, rename={"id_": "_id"}):
    id_: str
    createdAt: str | msgspec.UnsetType = msgspec.UNSET
    updatedAt: str | msgspec.UnsetType = msgspec.UNSET
    project: OneUptimeRelation | None | msgspec.UnsetType = msgspec.UNSET
    projectId: str | msgspec.UnsetType = msgspec.UNSET
    llmProvider: OneUptimeRelation | None | msgspec.UnsetType = msgspec.UNSET
    llmProviderId: str | None | msgspec.UnsetType = msgspec.UNSET
    llmProviderName: str | None | msgspec.UnsetType = msgspec.UNSET
    llmType: str | None | msgspec.UnsetType = msgspec.UNSET
    modelName: str | None | msgspec.UnsetType = msgspec.UNSET
    isGlobalProvider: bool | msgspec.UnsetType = msgspec.UNSET
    inputTokens: float | None | msgspec.UnsetType = msgspec.UNSET
    outputTokens: float | None | msgspec.UnsetType = msgspec.UNSET
    totalTokens: float | msgspec.UnsetType = msgspec.UNSET
    costInUSDCents: float | msgspec.UnsetType = msgspec.UNSET
    wasBilled: bool | msgspec.UnsetType = msgspec.UNSET
    status: str | msgspec.UnsetType = msgspec.UNSET
    statusMessage: str | None | msgspec.UnsetType = msgspec.UNSET
    feature: str | None | msgspec.UnsetType = msgspec.UNSET
    requestPrompt: str | None | msgspec.UnsetType = msgspec.UNSET
    responsePreview: str | None | msgspec.UnsetType = msgspec.UNSET
    incident: OneUptimeRelation | None | msgspec.UnsetType = msgspec.UNSET
    incidentId: str | None | msgspec.UnsetType = msgspec.UNSET
    alert: OneUptimeRelation | None | msgspec.UnsetType = msgspec.UNSET
    alertId: str | None | msgspec.UnsetType = msgspec.UNSET
    scheduledMaintenance: OneUptimeRelation | None | msgspec.UnsetType = msgspec.UNSET
    scheduledMaintenanceId: str | None | msgspec.UnsetType = msgspec.UNSET
    user: OneUptimeRelation | None | msgspec.UnsetType = msgspec.UNSET
    userId: str | None | msgspec.UnsetType = msgspec.UNSET
    requestStartedAt: str | None | msgspec.UnsetType = msgspec.UNSET
    requestCompletedAt: str | None | msgspec.UnsetType = msgspec.UNSET
    durationMs: float | None | msgspec.UnsetType = msgspec.UNSET


class OneUptimeList(msgspec.Struct):
    count: int
    limit: int
    skip: int
    data: list[OneUptimeItem]


class OneUptimeCount(msgspec.Struct):
    count: int


class OneUptimeError(msgspec.Struct, forbid_unknown_fields=True):
    message: str


# --- which operation a request is ------------------------------------------------------------------

# (method, path pattern, success schema, success type, error schema, error type); the first match wins.
NEWAPI = (NEWAPI_ERROR, NewApiError)
AIPROXY = (AIPROXY_ERROR, AiProxyError)
ONEUPTIME = (ONEUPTIME_ERROR, OneUptimeError)
OPERATIONS: list[tuple[str, re.Pattern, dict, type, dict, type]] = [
    (m, re.compile(p), ok_schema, ok_type, *error)
    for m, p, ok_schema, ok_type, error in [
        ("GET", r"/api/log/?", NEWAPI_PAGE, NewApiPageAnswer, NEWAPI),
        ("DELETE", r"/api/log/?", NEWAPI_DELETED, NewApiDeleteAnswer, NEWAPI),
        ("GET", r"/api/log/self/?", NEWAPI_PAGE, NewApiPageAnswer, NEWAPI),
        ("GET", r"/api/log/(self/)?stat/?", NEWAPI_STAT, NewApiStatAnswer, NEWAPI),
        ("GET", r"/api/log/(self/)?search/?", NEWAPI_LIST, NewApiListAnswer, NEWAPI),
        ("GET", r"/api/log/token/?", NEWAPI_LIST, NewApiListAnswer, NEWAPI),
        ("GET", r"/api/logs/search/?", AIPROXY_SEARCH, AiProxyAnswer, AIPROXY),
        ("GET", r"/api/log/[^/]+/search/?", AIPROXY_SEARCH, AiProxyAnswer, AIPROXY),
        (
            "GET|POST",
            r"/api/llm-log/get-list/?",
            ONEUPTIME_LIST,
            OneUptimeList,
            ONEUPTIME,
        ),
        (
            "GET|POST",
            r"/api/llm-log/[^/]+/get-item/?",
            ONEUPTIME_ITEM,
            OneUptimeItem,
            ONEUPTIME,
        ),
        ("POST", r"/api/llm-log/count/?", ONEUPTIME_COUNT, OneUptimeCount, ONEUPTIME),
    ]
]
# The dialects' paths: an answer of one of them that matches no operation above is a test failure too.
DIALECT_PATH = re.compile(r"/api/(log|logs|llm-log)(/|$)")


def operation_of(method: str, path: str) -> tuple[dict, type, dict, type] | None:
    for methods, pattern, *schemas in OPERATIONS:
        if method in methods.split("|") and pattern.fullmatch(path):
            return tuple(schemas)  # type: ignore[return-value]
    return None


def check_answer(method: str, path: str, status: int, body: bytes) -> None:
    """Validate one dialect answer against its seed's schema and decode it with the strict client.
    Raises AssertionError (or the validator's error) naming the operation and the field."""
    operation = operation_of(method, path)
    if operation is None:
        # an answer to a method the dialect does not have (405): the dialect's error envelope
        operation = next((op for m, p, *op in OPERATIONS if p.fullmatch(path)), None)
        assert operation is not None, f"{method} {path}: a dialect path no seed schema covers"
        assert status >= 400, f"{method} {path} answered {status} outside the seed's operations"
    ok_schema, ok_type, error_schema, error_type = operation
    schema, typed = (ok_schema, ok_type) if status < 400 else (error_schema, error_type)
    document = msgspec.json.decode(body)
    try:
        jsonschema.validate(document, schema)
    except jsonschema.ValidationError as error:
        raise AssertionError(
            f"{method} {path} ({status}): {error.message} at {list(error.absolute_path)}"
        ) from None
    msgspec.json.decode(body, type=typed, strict=True)


checked: list[tuple[str, str, int]] = []  # every answer checked in this run: the coverage test reads it


@pytest.fixture(autouse=True)
def dialect_answers_match_the_seeds(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every answer of a dialect path through APIClient is checked against its seed (check_answer)."""
    original = APIClient.request

    def request(self: APIClient, **kwargs: Any) -> Any:
        response = original(self, **kwargs)
        path, method = kwargs.get("PATH_INFO", ""), kwargs.get("REQUEST_METHOD", "GET")
        if DIALECT_PATH.match(path) and method != "OPTIONS" and response.content:
            check_answer(method, path, response.status_code, response.content)
            checked.append((method, path, response.status_code))
        return response

    monkeypatch.setattr(APIClient, "request", request)
