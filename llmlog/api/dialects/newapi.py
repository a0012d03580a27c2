"""new-api's log module: the `/api/log/` family over llmlog's usage records.

As new-api documents it (seeds/new-api-log-module.txt): every answer is `{success, message, data}`;
lists take `p` (page, from 1) and `page_size` (default 20, at most 100) and answer
`{items, total, page, page_size}`; times are unix seconds; filters are `type`, `start_timestamp`,
`end_timestamp` (inclusive, to the second), `username`, `token_name`, `model_name`, `channel`, `group`.

- `GET /api/log/` every org's records (new-api's admin: a platform key or a staff session);
  `GET /api/log/self` the caller's own. new-api's "self" is the logged-in user; an llmlog API key
  belongs to an org, so "self" is the key's org (a platform key's self is every org).
- `GET /api/log/stat`, `/api/log/self/stat`: `{quota, rpm, tpm}`: quota is the amount charged in
  new-api's quota units (below), rpm and tpm count the successful calls of the last 60 s.
- `GET /api/log/search`, `/api/log/self/search?keyword=`: the newest 100 records the keyword names: its
  log type number (2, 4), a prefix of its `content`, its transno, user, org, model or token name, or a
  word of its error.
- `GET /api/log/token?key=`: the records made with a gateway key, found by its sha256 (llmlog never
  stores a key); the key itself is the credential, no API key needed, and any origin may ask (CORS).
- `DELETE /api/log/?target_timestamp=`: deletes the accounted and skipped records that started before
  that time, hot and history, in batches, and answers the count; pending and failed records are never
  deleted. Needs an owner or admin key: an org key deletes its org's records, a platform key every org's.

Log `type`: 2 (consume) is a successful call, 4 (error) a failed one; 0 or none is every record.
new-api's other types (1 top-up, 3 manage, 5 system) are not usage records: they find nothing.
`quota` is an integer in new-api's quota units: round(amount x LLMLOG_NEWAPI_QUOTA_PER_UNIT), half to
even (default 500,000 per unit of money, new-api's per US dollar), per record; /stat adds the records'
rounded quotas, so the items of a filter add up to its /stat. `id` is the record's `seq` (a number, as
new-api's); `user_id`, `token_id` and `channel_id` are the gateway's ids when they are whole numbers and
0 otherwise, with the names in `username`, `token_name` and `channel_name`. A record's `use_time` is
its duration in whole seconds, `channel_name` its provider, `ip` the caller's IP, and `other` JSON text
with the request id (transno), the time to first byte in ms (`frt`) and the token kinds new-api keeps
there.
"""

import hashlib
import json
from dataclasses import replace
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db.models import Case, F, Func, Q, QuerySet, Sum, TextField, Value, When
from django.db.models.functions import Cast, Concat
from django.db.models.lookups import StartsWith
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import exceptions
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response

from llmlog.api.auth import caller_of
from llmlog.api.dialects.common import (
    MAX_PAGE_SIZE,
    NOT_BLANK,
    DialectView,
    QuotaUnits,
    bad_input,
    check_page_depth,
    gateway_number,
    int_param,
    quota_units,
    time_param,
    timestamp_schema,
    unix_seconds,
)
from llmlog.models import (
    MONEY_DIGITS,
    MONEY_PLACES,
    ApiKey,
    UsageStatus,
)
from llmlog.queries import MAX_PAGE_DEPTH, NO_STATUS, UsageQuery
from llmlog.retention import usage_delete_before
from llmlog.selectors import usage_count, usage_matching, usage_page, usage_rates, usage_stats

DEFAULT_PAGE_SIZE = 20
SEARCH_LIMIT = 100
TOKEN_LOG_LIMIT = 100
LOG_TYPE_CONSUME = 2
LOG_TYPE_ERROR = 4
# new-api's log types -> the usage status they are; None: every record; absent from the map: no record.
LOG_TYPES: dict[int, str | None] = {
    0: None,
    LOG_TYPE_CONSUME: UsageStatus.SUCCESS,
    LOG_TYPE_ERROR: UsageStatus.FAILED,
}
KNOWN_LOG_TYPES = (0, 1, 2, 3, 4, 5)
TYPE_OF_STATUS = {UsageStatus.SUCCESS: LOG_TYPE_CONSUME, UsageStatus.FAILED: LOG_TYPE_ERROR}
# new-api's equality filters -> the UsageQuery field each sets.
EQUALITY_PARAMS = {
    "username": "username",
    "token_name": "token_name",
    "model_name": "model_name",
    "channel": "channel_id",
    "group": "group",
}
# Only the columns an item shows: never the request/response bodies.
ITEM_COLUMNS = (
    "id",
    "seq",
    "transno",
    "userid",
    "username",
    "use_time",
    "status",
    "error_message",
    "token_id",
    "token_name",
    "model_name",
    "amount",
    "currency",
    "input_tokens",
    "output_tokens",
    "cached_tokens",
    "cache_creation_tokens",
    "reasoning_tokens",
    "total_tokens",
    "finish_seconds",
    "responsed_seconds",
    "is_stream",
    "channel_id",
    "provider",
    "group",
    "request_ip",
)


def log_query(params: Any, *, org: str) -> UsageQuery:
    """The records new-api's filter parameters name, in `org` ("" = every org)."""
    log_type = int_param(params, "type", default=0, minimum=0)
    if log_type not in KNOWN_LOG_TYPES:
        raise bad_input(
            "type", f"Unknown log type {log_type}: 1 top-up, 2 consume, 3 manage, 4 error, 5 system."
        )
    start = time_param(params, "start_timestamp", unit="s")
    end = time_param(params, "end_timestamp", unit="s")
    if start and end and end < start:
        raise bad_input("end_timestamp", "Must not be before start_timestamp.")
    equal = {field: params.get(param, "").strip() for param, field in EQUALITY_PARAMS.items()}
    return UsageQuery(
        org=org,
        start=start,
        end=end + timedelta(seconds=1) if end else None,  # new-api's end is inclusive, to the second
        status=LOG_TYPES.get(log_type, NO_STATUS),
        **{field: value for field, value in equal.items() if value},
    )


def log_item(row: dict[str, Any]) -> dict[str, Any]:
    """A record as new-api's log item."""
    failed = row["status"] == UsageStatus.FAILED
    amount = row["amount"]
    if failed:
        content = row["error_message"]
    else:
        charged = f"{amount} {row['currency']}" if amount is not None else "not priced yet"
        content = (
            f"{row['model_name']}: {row['input_tokens']} prompt + {row['output_tokens']} completion tokens, "
            f"{charged}"
        )
    other = {
        "request_id": row["transno"],
        "frt": None if row["responsed_seconds"] is None else round(row["responsed_seconds"] * 1000),
        "cache_tokens": row["cached_tokens"],
        "cache_creation_tokens": row["cache_creation_tokens"],
        "reasoning_tokens": row["reasoning_tokens"],
        "currency": row["currency"],
    }
    return {
        "id": row["seq"] or 0,  # null only on SQLite, between an insert and its trigger
        "user_id": gateway_number(row["userid"]),
        "created_at": unix_seconds(row["use_time"]),
        "type": TYPE_OF_STATUS.get(row["status"], LOG_TYPE_CONSUME),
        "content": content,
        "username": row["username"],
        "token_name": row["token_name"],
        "model_name": row["model_name"],
        "quota": quota_units(amount),
        "prompt_tokens": row["input_tokens"],
        "completion_tokens": row["output_tokens"],
        "use_time": round(row["finish_seconds"]) if row["finish_seconds"] is not None else 0,
        "is_stream": row["is_stream"],
        "channel_id": gateway_number(row["channel_id"]),
        "channel_name": row["provider"],
        "token_id": gateway_number(row["token_id"]),
        "group": row["group"],
        "ip": row["request_ip"] or "",
        "other": json.dumps(other, separators=(",", ":")),
    }


def exact_quota_of_sums() -> bool:
    """True when every amount is a whole number of quota units (the quota per unit is a multiple of
    10^MONEY_PLACES, as the default 500,000 is): then the quota of a sum is the sum of the quotas and
    the hourly rollups' amounts may answer /stat. Otherwise each record's rounding counts."""
    return settings.LLMLOG_NEWAPI_QUOTA_PER_UNIT % 10**MONEY_PLACES == 0


def quota_sum(records: QuerySet) -> int:
    """The sum of the records' quotas, each rounded on its own (quota_units), summed in the database."""
    total = records.order_by().aggregate(quota=Sum(QuotaUnits(F("amount"))))["quota"]
    return int(total or 0)


def content_prefix_terms(keyword: str) -> list[Q]:
    """The records whose log `content` (log_item) starts with `keyword`, as conditions the indexes serve.

    A successful call's content is "{model_name}: {prompt} prompt + {completion} completion tokens,
    {amount} {currency}" (or "..., not priced yet"). A keyword no longer than the model name is a prefix
    of the content exactly when it is a prefix of the model name (model_name LIKE 'k%', on the
    varchar_pattern_ops indexes); a longer one starts with the model name and ": ", so its model name is
    one of the keyword's own prefixes that ": " follows (an equality, on the model_name indexes), and the
    rest is compared with the content built in SQL. A failed call's content is its error message: the
    native search finds it (a word of the error).
    """
    succeeded = ~Q(status=UsageStatus.FAILED)
    terms = [Q(model_name__startswith=keyword) & succeeded]
    for at in range(1, len(keyword)):
        rest = keyword[at:]
        if rest == ":" or rest.startswith(": "):
            content = Concat(
                F("model_name"),
                Value(": "),
                Cast("input_tokens", TextField()),
                Value(" prompt + "),
                Cast("output_tokens", TextField()),
                Value(" completion tokens, "),
                Case(
                    When(amount__isnull=True, then=Value("not priced yet")),
                    default=Concat(
                        AmountText(F("amount")), Value(" "), F("currency"), output_field=TextField()
                    ),
                    output_field=TextField(),
                ),
                output_field=TextField(),
            )
            terms.append(Q(model_name=keyword[:at]) & succeeded & Q(StartsWith(content, keyword)))
    return terms


class AmountText(Func):
    """An amount as Python writes the Decimal the column gives back: MONEY_PLACES decimals."""

    output_field = TextField()

    def as_sql(self, compiler: Any, connection: Any, **extra: Any) -> tuple[str, list[Any]]:
        sql, params = compiler.compile(self.source_expressions[0])
        return f"printf('%.{MONEY_PLACES}f', {sql})", list(params)

    def as_postgresql(self, compiler: Any, connection: Any, **extra: Any) -> tuple[str, list[Any]]:
        sql, params = compiler.compile(self.source_expressions[0])
        return f"CAST(CAST({sql} AS numeric({MONEY_DIGITS}, {MONEY_PLACES})) AS text)", list(params)


def keyword_terms(keyword: str) -> tuple[Q, ...]:
    """What new-api's `keyword` names besides what the native search does (transno, user, org, model,
    token, a word of the error): its log type number (2 consume, 4 error) and a prefix of its content."""
    keyword = keyword.strip()
    terms: list[Q] = []
    if keyword.isascii() and keyword.isdigit() and LOG_TYPES.get(int(keyword)):
        terms.append(Q(status=LOG_TYPES[int(keyword)]))
    return (*terms, *content_prefix_terms(keyword))


def newest_items(query: UsageQuery, limit: int, offset: int = 0) -> list[dict[str, Any]]:
    rows = usage_page(query=query, offset=offset, limit=limit, columns=ITEM_COLUMNS)
    return [log_item(row) for row in rows]


def ok(data: Any) -> Response:
    return Response({"success": True, "message": "", "data": data})


# --- OpenAPI --------------------------------------------------------------------------------------

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
PAGE_PARAMETERS = [
    OpenApiParameter(
        "p",
        {"type": "integer", "minimum": 1, "maximum": MAX_PAGE_DEPTH},
        description=f"Page, from 1; p × page_size ≤ {MAX_PAGE_DEPTH}.",
    ),
    OpenApiParameter(
        "page_size",
        {"type": "integer", "minimum": 1, "maximum": MAX_PAGE_SIZE},
        description=f"Default {DEFAULT_PAGE_SIZE}, at most {MAX_PAGE_SIZE}.",
    ),
]
KEYWORD = OpenApiParameter(
    "keyword", NOT_BLANK, required=True, description="transno, user, org, model, token, error."
)


# --- views ----------------------------------------------------------------------------------------


class NewApiView(DialectView):
    """new-api's envelope for errors too: {"success": false, "message": ...}."""

    admin_only = False

    def error_body(self, message: str, status_code: int) -> dict[str, Any]:
        return {"success": False, "message": message}

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        super().initial(request, *args, **kwargs)
        if self.admin_only and request.method != "DELETE" and not caller_of(request).is_platform:
            raise exceptions.PermissionDenied(
                "This endpoint reads every org's records: it needs a platform key or a staff session. "
                "An org key reads its own under /api/log/self."
            )

    def page(self, request: Request, org: str) -> Response:
        params = request.query_params
        page = int_param(params, "p", default=1, minimum=1)
        size = int_param(params, "page_size", default=DEFAULT_PAGE_SIZE, minimum=1, maximum=MAX_PAGE_SIZE)
        offset = (page - 1) * size
        check_page_depth(offset=offset, size=size, param="p", narrow_with="start_timestamp and end_timestamp")
        query = log_query(params, org=org)
        count = usage_count(query=query)  # every record of every org: an estimate, said so
        data = {
            "items": newest_items(query, size, offset),
            "total": count["count"],
            "page": page,
            "page_size": size,
        }
        if count["estimated"]:
            data["total_is_estimate"] = True
        return ok(data)

    def stat(self, request: Request, org: str) -> Response:
        query = log_query(request.query_params, org=org)
        if query.finds_nothing:
            quota = 0
        elif exact_quota_of_sums() and query.rollups_can_answer:
            # A time range, a model and a type only: the hourly rollups answer the closed hours.
            quota = quota_units(usage_stats(query=query)["amount"])
        else:
            quota = quota_sum(usage_matching(query=query))
        # new-api's rpm and tpm: the successful calls of the last 60 s, under the filters but the time.
        rates = usage_rates(query=replace(query, status=UsageStatus.SUCCESS))
        return ok({"quota": quota, **rates})

    def search(self, request: Request, org: str) -> Response:
        keyword = request.query_params.get("keyword", "").strip()
        if not keyword:
            raise bad_input("keyword", "keyword is required.")
        query = UsageQuery(org=org, keyword=keyword, keyword_terms=keyword_terms(keyword))
        return ok(newest_items(query, SEARCH_LIMIT))


class LogView(NewApiView):
    """`/api/log/`: GET every org's records (platform); DELETE accounted records before a time."""

    admin_only = True

    @extend_schema(
        summary="new-api: every org's logs",
        operation_id="newapi_log_list",
        description="A platform key or a staff session; an org key reads /api/log/self.",
        tags=[TAG],
        parameters=PAGE_PARAMETERS + FILTER_PARAMETERS,
        responses={200: OpenApiResponse(PAGE_SCHEMA), 400: ERROR, 403: ERROR},
    )
    def get(self, request: Request) -> Response:
        return self.page(request, org="")

    @extend_schema(
        summary="new-api: delete accounted logs before a time",
        operation_id="newapi_log_delete",
        description="Deletes the accounted and skipped records (hot and history) that started before "
        "target_timestamp, in batches; pending and failed records are never deleted. An owner or admin "
        "key: an org key deletes its org's records, a platform key every org's. data: how many.",
        tags=[TAG],
        parameters=[
            OpenApiParameter(
                "target_timestamp", timestamp_schema("s"), required=True, description="unix seconds"
            )
        ],
        responses={200: OpenApiResponse(envelope({"type": "integer"})), 400: ERROR, 403: ERROR},
    )
    def delete(self, request: Request) -> Response:
        caller = caller_of(request)
        if caller.role not in (ApiKey.Role.OWNER, ApiKey.Role.ADMIN):
            raise exceptions.PermissionDenied("Deleting logs needs an owner or admin key.")
        if not request.query_params.get("target_timestamp", "").strip():
            raise bad_input("target_timestamp", "target timestamp is required")
        before = time_param(request.query_params, "target_timestamp", unit="s")
        if before is None:
            raise bad_input("target_timestamp", "target timestamp is required")
        return ok(usage_delete_before(before=before, org=caller.userorgid))


class SelfLogView(NewApiView):
    @extend_schema(
        summary="new-api: my logs",
        operation_id="newapi_log_self",
        description="The caller's org's records (a platform key: every org's).",
        tags=[TAG],
        parameters=PAGE_PARAMETERS + FILTER_PARAMETERS,
        responses={200: OpenApiResponse(PAGE_SCHEMA), 400: ERROR},
    )
    def get(self, request: Request) -> Response:
        return self.page(request, org=self.org(request))


class LogStatView(NewApiView):
    admin_only = True

    @extend_schema(
        summary="new-api: log stats of every org",
        operation_id="newapi_log_stat",
        tags=[TAG],
        parameters=FILTER_PARAMETERS,
        responses={200: OpenApiResponse(STAT_SCHEMA), 400: ERROR, 403: ERROR},
    )
    def get(self, request: Request) -> Response:
        return self.stat(request, org="")


class SelfLogStatView(NewApiView):
    @extend_schema(
        summary="new-api: my log stats",
        operation_id="newapi_log_self_stat",
        description="quota (amount charged), rpm and tpm of the caller's org.",
        tags=[TAG],
        parameters=FILTER_PARAMETERS,
        responses={200: OpenApiResponse(STAT_SCHEMA), 400: ERROR},
    )
    def get(self, request: Request) -> Response:
        return self.stat(request, org=self.org(request))


class LogSearchView(NewApiView):
    admin_only = True

    @extend_schema(
        summary="new-api: search every org's logs",
        operation_id="newapi_log_search",
        description=f"The newest {SEARCH_LIMIT} records the keyword names.",
        tags=[TAG],
        parameters=[KEYWORD],
        responses={200: OpenApiResponse(LIST_SCHEMA), 400: ERROR, 403: ERROR},
    )
    def get(self, request: Request) -> Response:
        return self.search(request, org="")


class SelfLogSearchView(NewApiView):
    @extend_schema(
        summary="new-api: search my logs",
        operation_id="newapi_log_self_search",
        description=f"The newest {SEARCH_LIMIT} records of the caller's org the keyword names.",
        tags=[TAG],
        parameters=[KEYWORD],
        responses={200: OpenApiResponse(LIST_SCHEMA), 400: ERROR},
    )
    def get(self, request: Request) -> Response:
        return self.search(request, org=self.org(request))


def gateway_key_hashes(key: str) -> list[str]:
    """sha256 of the key as given, and with or without new-api's "sk-" prefix (its UI shows keys with
    it, its database keeps them without, and a gateway may report either)."""
    variants = {key, key.removeprefix("sk-") if key.startswith("sk-") else f"sk-{key}"}
    return sorted(hashlib.sha256(variant.encode()).hexdigest() for variant in variants)


class TokenLogView(NewApiView):
    """`/api/log/token?key=`: the gateway key is the credential. Any origin may call it (CORS)."""

    authentication_classes: list = []
    permission_classes = [AllowAny]
    CORS_HEADERS = {
        "Access-Control-Allow-Origin": "*",
        "Access-Control-Allow-Methods": "GET, OPTIONS",
        "Access-Control-Allow-Headers": "Content-Type, Authorization",
        "Access-Control-Max-Age": "86400",
    }

    def finalize_response(self, request: Request, response: Response, *args: Any, **kwargs: Any) -> Response:
        response = super().finalize_response(request, response, *args, **kwargs)
        for name, value in self.CORS_HEADERS.items():
            response[name] = value
        return response

    @extend_schema(exclude=True)
    def options(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return Response(status=204)

    @extend_schema(
        summary="new-api: logs of a gateway key",
        operation_id="newapi_log_token",
        description=f"The newest {TOKEN_LOG_LIMIT} records made with the gateway key `key` (matched by "
        "its sha256, with or without the sk- prefix). No API key needed; CORS allowed from any origin.",
        tags=[TAG],
        auth=[],
        parameters=[
            OpenApiParameter("key", NOT_BLANK, required=True, description="The gateway key (token).")
        ],
        responses={200: OpenApiResponse(LIST_SCHEMA), 400: ERROR},
    )
    def get(self, request: Request) -> Response:
        key = request.query_params.get("key", "").strip()
        if not key:
            raise bad_input("key", "key is required.")
        query = UsageQuery(token_key_hashes=tuple(gateway_key_hashes(key)))
        return ok(newest_items(query, TOKEN_LOG_LIMIT))
