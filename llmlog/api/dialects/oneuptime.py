"""OneUptime's LLM Log API: `get-list`, `get-item` and `count` over llmlog's usage records.

Paths, body and answers as OneUptime documents them (seeds/oneuptime-llm-log-api.txt):

- `POST|GET /api/llm-log/get-list?skip=0&limit=10` with `{select, query, sort}` →
  `{count, limit, skip, data: [...]}`; limit defaults to 10 and is at most 100.
- `POST|GET /api/llm-log/{id}/get-item` with `{select}` → the record.
- `POST /api/llm-log/count` with `{query}` → `{"count": n}`.

A GET carries `select`, `query` and `sort` as JSON in query parameters of those names. As in OneUptime,
a record answers `_id` plus the fields `select` names. OneUptime's names map onto llmlog's columns:
a project is an org (`projectId` = `userorgid`), an LLM provider is a gateway channel
(`llmProviderId` = `channel_id`, `llmProviderName` = `provider`, `llmType` = `provider_type`),
`costInUSDCents` is `amount` × 100 (what the project was charged), `wasBilled` means posted to the
ledger (`accounting_status` = accounted), `status` is `Success` or `Error`, `durationMs` is
`finish_seconds` × 1000, `requestPrompt` / `responsePreview` are the kept request and response, and
`incidentId`, `alertId`, `scheduledMaintenanceId` are the gateway's metadata keys of those names.
`createdAt` and `requestStartedAt` are both the call's start (`use_time`): a record comes into being
when the call is made, and `use_time` is what llmlog indexes and dates by (the ingest moment,
`created_at`, lags it by the gateway's batching); `updatedAt` is when the record was last changed
(accounted, or else ingested). Dates are answered as ISO 8601 strings.

`query` takes a value (equality), null (is empty), or one of OneUptime's operators:
`{"_type": "EqualTo"|"NotEqual"|"GreaterThan"|"GreaterThanOrEqual"|"LessThan"|"LessThanOrEqual",
"value": v}`, `{"_type": "InBetween", "startValue": a, "endValue": b}`, `{"_type": "Includes",
"value": [..]}`, `{"_type": "Search", "value": text}`, `{"_type": "IsNull"}`, `{"_type": "NotNull"}`.
`sort` maps fields to 1 / -1 (or "ASC" / "DESC"); ties are broken by `_id`. An unknown field in
`select`, `query` or `sort` is a 400 naming it.
"""

import json
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from django.db.models import F, Q
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import exceptions
from rest_framework.request import Request
from rest_framework.response import Response

from llmlog.api.dialects.common import (
    MAX_PAGE_SIZE,
    DialectView,
    bad_input,
    check_page_depth,
    int_param,
    ioinfo_side,
    iso,
    money_number,
)
from llmlog.filters import InvalidFilter, parse_time, text_problem
from llmlog.models import AccountingStatus, UsageAll, UsageStatus
from llmlog.queries import (
    EQUALITY_COLUMNS,
    MAX_PAGE_DEPTH,
    NEWEST_FIRST,
    NO_STATUS,
    SortTerms,
    UsageQuery,
)
from llmlog.selectors import usage_count, usage_page, usage_record_values

DEFAULT_LIMIT = 10
# The largest number a query compares with: the columns are 64-bit integers or Decimal(18, 5).
NUMBER_LIMIT = 2**63 - 1
STATUS_NAMES = {UsageStatus.SUCCESS: "Success", UsageStatus.FAILED: "Error"}
# OneUptime's third status is for calls it refused for want of balance; llmlog stores no such record,
# so querying it (or any other text) is valid and finds nothing.
STATUS_VALUES = {"Success": UsageStatus.SUCCESS, "Error": UsageStatus.FAILED, "Insufficient Balance": None}

Row = Mapping[str, Any]


def _relation(column: str) -> Callable[[Row], Any]:
    return lambda row: {"_id": row[column]} if row[column] else None


def _metadata_key(key: str) -> Callable[[Row], Any]:
    return lambda row: (row["metadata"] or {}).get(key)


def _metadata_relation(key: str) -> Callable[[Row], Any]:
    def value(row: Row) -> Any:
        found = (row["metadata"] or {}).get(key)
        return {"_id": found} if found else None

    return value


def _completed_at(row: Row) -> str | None:
    if row["finish_seconds"] is None:
        return None
    return iso(row["use_time"] + timedelta(seconds=row["finish_seconds"]))


def _cents(row: Row) -> float:
    # Required (a Number) in the seed: a record not priced yet has been charged nothing so far.
    return money_number(row["amount"] * 100) if row["amount"] is not None else 0


@dataclass(frozen=True)
class LogField:
    """One field of OneUptime's LLM Log: the columns it reads, its value, and how it is queried."""

    reads: tuple[str, ...]
    value: Callable[[Row], Any]
    column: str | None = None  # the column `query` and `sort` use; None: select only
    kind: str = "text"  # how query values are read, see _operand
    sortable: bool = False


def _col(column: str, kind: str = "text", *, sortable: bool = False) -> LogField:
    return LogField(
        reads=(column,), value=lambda row: row[column], column=column, kind=kind, sortable=sortable
    )


FIELDS: dict[str, LogField] = {
    "_id": LogField(("id",), lambda row: str(row["id"]), "id", "uuid", sortable=True),
    "createdAt": LogField(("use_time",), lambda row: iso(row["use_time"]), "use_time", "date", sortable=True),
    "updatedAt": LogField(
        ("accounted_at", "created_at"), lambda row: iso(row["accounted_at"] or row["created_at"])
    ),
    "projectId": _col("userorgid"),
    "project": LogField(("userorgid",), _relation("userorgid")),
    "llmProviderId": _col("channel_id"),
    "llmProvider": LogField(("channel_id",), _relation("channel_id")),
    "llmProviderName": _col("provider"),
    "llmType": _col("provider_type"),
    "modelName": _col("model_name"),
    "isGlobalProvider": _col("is_global_provider", "bool"),
    "inputTokens": _col("input_tokens", "number", sortable=True),
    "outputTokens": _col("output_tokens", "number", sortable=True),
    "totalTokens": _col("total_tokens", "number", sortable=True),
    "costInUSDCents": LogField(("amount",), _cents, "amount", "cents", sortable=True),
    "wasBilled": LogField(
        ("accounting_status",),
        lambda row: row["accounting_status"] == AccountingStatus.ACCOUNTED,
        "accounting_status",
        "billed",
    ),
    "status": LogField(
        ("status",), lambda row: STATUS_NAMES.get(row["status"], row["status"]), "status", "status"
    ),
    "statusMessage": _col("error_message"),
    "feature": _col("feature"),
    "requestPrompt": LogField(("ioinfo",), lambda row: ioinfo_side(row["ioinfo"], "request")[0]),
    "responsePreview": LogField(("ioinfo",), lambda row: ioinfo_side(row["ioinfo"], "response")[0]),
    "incidentId": LogField(("metadata",), _metadata_key("incidentId"), "metadata__incidentId", "meta"),
    "incident": LogField(("metadata",), _metadata_relation("incidentId")),
    "alertId": LogField(("metadata",), _metadata_key("alertId"), "metadata__alertId", "meta"),
    "alert": LogField(("metadata",), _metadata_relation("alertId")),
    "scheduledMaintenanceId": LogField(
        ("metadata",), _metadata_key("scheduledMaintenanceId"), "metadata__scheduledMaintenanceId", "meta"
    ),
    "scheduledMaintenance": LogField(("metadata",), _metadata_relation("scheduledMaintenanceId")),
    "userId": _col("userid"),
    "user": LogField(("userid",), _relation("userid")),
    "requestStartedAt": LogField(
        ("use_time",), lambda row: iso(row["use_time"]), "use_time", "date", sortable=True
    ),
    "requestCompletedAt": LogField(("use_time", "finish_seconds"), _completed_at),
    "durationMs": LogField(
        ("finish_seconds",),
        lambda row: None if row["finish_seconds"] is None else round(row["finish_seconds"] * 1000),
        "finish_seconds",
        "ms",
        sortable=True,
    ),
}
SORTABLE = [name for name, field in FIELDS.items() if field.sortable]
QUERYABLE = [name for name, field in FIELDS.items() if field.column]


# --- select ---------------------------------------------------------------------------------------


def parse_select(select: Any) -> list[str]:
    """The fields to answer: `_id` and each field `select` sets (true, or a relation's sub-select)."""
    if select is None:
        return ["_id"]
    if not isinstance(select, Mapping):
        raise bad_input("select", "Expected an object mapping field names to true.")
    names = ["_id"]
    for name, wanted in select.items():
        if name not in FIELDS:
            raise bad_input(f"select.{name}", f"Unknown field. Fields: {', '.join(FIELDS)}.")
        if wanted not in (False, None, 0) and name not in names:
            names.append(name)
    return names


def shape(row: Row, names: list[str]) -> dict[str, Any]:
    return {name: FIELDS[name].value(row) for name in names}


def columns_for(names: list[str]) -> list[str]:
    return sorted({column for name in names for column in FIELDS[name].reads})


# --- query ----------------------------------------------------------------------------------------

# OneUptime's operator objects: `_type` -> (our operator, the keys holding its operands)
OPERATORS: dict[str, tuple[str, tuple[str, ...]]] = {
    "EqualTo": ("exact", ("value",)),
    "ObjectID": ("exact", ("value",)),
    "DateTime": ("exact", ("value",)),
    "NotEqual": ("ne", ("value",)),
    "GreaterThan": ("gt", ("value",)),
    "GreaterThanOrEqual": ("gte", ("value",)),
    "LessThan": ("lt", ("value",)),
    "LessThanOrEqual": ("lte", ("value",)),
    "InBetween": ("range", ("startValue", "endValue")),
    "Includes": ("in", ("value",)),
    "Search": ("search", ("value",)),
    "IsNull": ("isnull", ()),
    "NotNull": ("notnull", ()),
}
ORDERED = {"exact", "ne", "gt", "gte", "lt", "lte", "range", "in", "isnull", "notnull"}
OPERATORS_BY_KIND: dict[str, set[str]] = {
    "text": {"exact", "ne", "in", "search", "isnull", "notnull"},
    "meta": {"exact", "ne", "in", "search", "isnull", "notnull"},
    "uuid": {"exact", "ne", "in"},
    "number": ORDERED,
    "cents": ORDERED,
    "ms": ORDERED,
    "date": ORDERED - {"isnull", "notnull"},
    "bool": {"exact", "ne"},
    "billed": {"exact", "ne"},
    "status": {"exact", "ne", "in"},
}


def _unwrap(value: Any) -> Any:
    """OneUptime serializes ids and dates as {"_type": "ObjectID"|"DateTime", "value": ...}."""
    if isinstance(value, Mapping) and value.get("_type") in ("ObjectID", "DateTime", "Decimal"):
        return value.get("value")
    return value


def _operand(kind: str, value: Any, param: str) -> Any:
    """A query value read as the column's type; a 400 naming `param` when it is not one."""
    value = _unwrap(value)
    if isinstance(value, str) and text_problem(value):
        raise bad_input(param, text_problem(value))
    if kind in ("text", "meta"):
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise bad_input(param, f"Expected text, got {json.dumps(value)}.")
        return str(value)
    if kind == "uuid":
        try:
            return uuid.UUID(str(value))
        except ValueError:
            raise bad_input(param, f"{value!r} is not a valid UUID.") from None
    if kind in ("bool", "billed"):
        if isinstance(value, bool):
            return value
        if value in ("true", "false"):
            return value == "true"
        raise bad_input(param, f"Expected true or false, got {json.dumps(value)}.")
    if kind == "status":
        # Text, as the seed types it: any string is a valid value, and one that is not a status of
        # llmlog's ("Success", "Error") finds nothing ("" is no record's status).
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise bad_input(param, f"Expected text, got {json.dumps(value)}.")
        return STATUS_VALUES.get(str(value)) or ""
    if kind == "date":
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise bad_input(param, f"Expected an ISO 8601 date, got {json.dumps(value)}.")
        try:
            return parse_time(value, name=param)
        except InvalidFilter as exc:
            raise exceptions.ValidationError(exc.errors) from None
    # numbers: tokens, cents, milliseconds
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise bad_input(param, f"Expected a number, got {json.dumps(value)}.")
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        raise bad_input(param, f"Expected a number, got {json.dumps(value)}.") from None
    if not number.is_finite() or abs(number) > NUMBER_LIMIT:
        raise bad_input(param, f"Expected a finite number of at most {NUMBER_LIMIT}.")
    if kind == "cents":
        return number / 100
    if kind == "ms":
        return float(number) / 1000
    return number


def _condition(condition: Any, param: str) -> tuple[str, list[Any]]:
    """(operator, operands) of one query condition."""
    if condition is None:
        return "isnull", []
    if isinstance(condition, list):
        raise bad_input(
            param, 'Expected a value or an operator object; for a list use {"_type": "Includes"}.'
        )
    if not isinstance(condition, Mapping):
        return "exact", [condition]
    kind = condition.get("_type")
    if kind not in OPERATORS:
        raise bad_input(param, f"Unknown operator {kind!r}; operators: {', '.join(OPERATORS)}.")
    operator, keys = OPERATORS[kind]
    missing = [key for key in keys if key not in condition]
    if missing:
        raise bad_input(param, f"{kind} needs {', '.join(missing)}.")
    operands = [condition[key] for key in keys]
    if operator == "in":
        if not isinstance(operands[0], list):
            raise bad_input(param, "Includes needs a list in value.")
        operands = operands[0]
    return operator, operands


def field_q(name: str, condition: Any) -> Q:
    """The filter one `query` entry stands for."""
    param = f"query.{name}"
    field = FIELDS.get(name)
    if field is None:
        raise bad_input(param, f"Unknown field. Fields you can query: {', '.join(QUERYABLE)}.")
    if field.column is None:
        raise bad_input(param, f"This field cannot be queried. Fields you can query: {', '.join(QUERYABLE)}.")
    operator, raw = _condition(condition, param)
    if operator not in OPERATORS_BY_KIND[field.kind]:
        raise bad_input(param, f"This field does not take the {operator!r} operator.")
    values = [_operand(field.kind, value, param) for value in raw]
    column = field.column

    if field.kind == "billed":
        billed = Q(accounting_status=AccountingStatus.ACCOUNTED)
        return billed if values[0] == (operator == "exact") else ~billed
    if operator in ("isnull", "notnull"):
        empty = Q(**{f"{column}__isnull": True})
        if field.kind == "text":
            empty = Q(**{column: ""})
        return empty if operator == "isnull" else ~empty
    if operator == "exact":
        return Q(**{column: values[0]})
    if operator == "ne":
        return ~Q(**{column: values[0]})
    if operator == "range":
        return Q(**{f"{column}__gte": values[0], f"{column}__lte": values[1]})
    if operator == "search":
        return Q(**{f"{column}__icontains": values[0]})
    if operator == "in":
        return Q(**{f"{column}__in": values})
    return Q(**{f"{column}__{operator}": values[0]})


# A date condition that is a bound of UsageQuery's time range: operator -> the bound.
TIME_BOUNDS = {"gte": "start", "lt": "end"}


def _query_field(name: str, condition: Any) -> tuple[str, Any] | None:
    """(UsageQuery field, value) when the (valid) condition is one the query value holds itself: an
    equality on a column it filters, a status, a [start, end) bound of the time range."""
    field = FIELDS[name]
    operator, raw = _condition(condition, f"query.{name}")
    if field.kind == "text" and operator == "exact" and field.column in EQUALITY_COLUMNS:
        return field.column, _operand(field.kind, raw[0], f"query.{name}")
    if field.kind == "status" and operator == "exact":
        return "status", _operand(field.kind, raw[0], f"query.{name}") or NO_STATUS
    if field.kind == "date" and operator in TIME_BOUNDS:
        return TIME_BOUNDS[operator], _operand(field.kind, raw[0], f"query.{name}")
    return None


def query_parts(query: Any) -> tuple[dict[str, Any], Q]:
    """`query` as UsageQuery fields where a condition is one (_query_field), and the rest as one
    condition (they all hold). A bad condition is a 400 naming it."""
    if query is None:
        return {}, Q()
    if not isinstance(query, Mapping):
        raise bad_input("query", "Expected an object mapping field names to conditions.")
    fields: dict[str, Any] = {}
    rest = Q()
    for name, condition in query.items():
        condition_q = field_q(name, condition)  # validates it, whatever form it takes below
        simple = _query_field(name, condition)
        if simple and simple[0] not in fields:
            fields[simple[0]] = simple[1]
        else:
            rest &= condition_q
    return fields, rest


# --- sort -----------------------------------------------------------------------------------------


def parse_sort(sort: Any) -> list[Any]:
    """order_by() terms for `sort` (default: newest first), with `_id` breaking ties."""
    if sort is None or sort == {}:
        sort = {"createdAt": -1}
    if not isinstance(sort, Mapping):
        raise bad_input("sort", 'Expected an object such as {"createdAt": -1}.')
    terms: list[Any] = []
    descending = True
    for name, direction in sort.items():
        param = f"sort.{name}"
        field = FIELDS.get(name)
        if field is None:
            raise bad_input(param, f"Unknown field. Fields you can sort by: {', '.join(SORTABLE)}.")
        if not field.sortable:
            raise bad_input(param, f"This field cannot be sorted by. Fields you can: {', '.join(SORTABLE)}.")
        text = str(direction).strip().upper() if not isinstance(direction, bool) else ""
        if text in ("-1", "DESC", "DESCENDING"):
            descending = True
        elif text in ("1", "ASC", "ASCENDING"):
            descending = False
        else:
            raise bad_input(param, f'Expected -1 or 1 (or "DESC" or "ASC"), got {json.dumps(direction)}.')
        expression = F(field.column)
        terms.append(expression.desc(nulls_last=True) if descending else expression.asc(nulls_first=True))
    if "_id" not in sort:
        terms.append(F("id").desc() if descending else F("id").asc())
    return terms


# --- views ----------------------------------------------------------------------------------------

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


def _check_text(value: Any, param: str) -> None:
    """A 400 naming `param` when a text in `value` (JSON: keys too) could reach neither a query nor
    the answer's message: NUL, or a lone surrogate, which no encoder can write."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, Mapping):
            stack += [*item.keys(), *item.values()]
        elif isinstance(item, list):
            stack += item
        elif isinstance(item, str) and text_problem(item):
            raise bad_input(param, text_problem(item))


class OneUptimeView(DialectView):
    """OneUptime answers errors as {"message": ...}."""

    def error_body(self, message: str, status_code: int) -> dict[str, str]:
        return {"message": message}

    def body(self, request: Request) -> Mapping[str, Any]:
        """select / query / sort: from the JSON body, or on a GET from query parameters holding JSON.
        A NUL or a lone surrogate anywhere in them (a name or a value) is a 400 naming the part."""
        body = self._body(request)
        for name in ("select", "query", "sort"):
            _check_text(body.get(name), name)
        return body

    def _body(self, request: Request) -> Mapping[str, Any]:
        if request.method == "GET":
            body = {}
            for name in ("select", "query", "sort"):
                text = request.query_params.get(name)
                if text:
                    try:
                        body[name] = json.loads(text)
                    except (ValueError, RecursionError):  # malformed, or nested past the decoder
                        raise bad_input(name, "Expected JSON.") from None
            return body
        data = request.data
        if not isinstance(data, Mapping) or hasattr(data, "getlist"):
            if hasattr(data, "getlist") and not data:  # no body at all
                return {}
            raise bad_input("body", "Expected a JSON object with select, query and sort.")
        return data

    def usage_query(self, request: Request, body: Mapping[str, Any], *, sort: bool = False) -> UsageQuery:
        """The records `query` names in the caller's project (org), in `sort`'s order when asked."""
        fields, rest = query_parts(body.get("query"))
        return UsageQuery(
            org=self.org(request),
            where=rest or None,
            ordering=SortTerms(tuple(parse_sort(body.get("sort")))) if sort else NEWEST_FIRST,
            **fields,
        )


def _list_schema(method: str) -> Any:
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


class LLMLogListView(OneUptimeView):
    @_list_schema("POST")
    def post(self, request: Request) -> Response:
        return self.answer(request)

    @_list_schema("GET")
    def get(self, request: Request) -> Response:
        return self.answer(request)

    def answer(self, request: Request) -> Response:
        body = self.body(request)
        limit = int_param(
            request.query_params, "limit", default=DEFAULT_LIMIT, minimum=0, maximum=MAX_PAGE_SIZE
        )
        skip = int_param(request.query_params, "skip", default=0, minimum=0)
        check_page_depth(offset=skip, size=limit, param="skip", narrow_with="a createdAt range in query")
        names = parse_select(body.get("select"))
        query = self.usage_query(request, body, sort=True)
        page = usage_page(query=query, offset=skip, limit=limit, columns=tuple(columns_for(names)))
        count = usage_count(query=query)  # every record of every project: an estimate, said so
        answer: dict[str, Any] = {
            "count": count["count"],
            "limit": limit,
            "skip": skip,
            "data": [shape(row, names) for row in page],
        }
        if count["estimated"]:
            answer["countIsEstimate"] = True
        return Response(answer)


def _item_schema(method: str) -> Any:
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


class LLMLogItemView(OneUptimeView):
    @_item_schema("POST")
    def post(self, request: Request, pk: str) -> Response:
        return self.answer(request, pk)

    @_item_schema("GET")
    def get(self, request: Request, pk: str) -> Response:
        return self.answer(request, pk)

    def answer(self, request: Request, pk: str) -> Response:
        try:
            record_id = uuid.UUID(pk)
        except ValueError:
            raise bad_input("id", f"{pk!r} is not a valid UUID.") from None
        names = parse_select(self.body(request).get("select"))
        try:
            row = usage_record_values(org=self.org(request), id=record_id)  # prepared; hot or history
        except UsageAll.DoesNotExist:
            raise exceptions.NotFound(f"No LLM Log with id {pk}.") from None
        return Response(shape(row, names))


class LLMLogCountView(OneUptimeView):
    @extend_schema(
        summary="OneUptime: count LLM logs",
        operation_id="oneuptime_llm_log_count",
        tags=["dialect: OneUptime"],
        request={"application/json": {"type": "object", "properties": {"query": QUERY_SCHEMA}}},
        responses={
            200: OpenApiResponse(
                {"type": "object", "properties": {"count": {"type": "integer"}}},
                "The number of matching records (hot and history).",
            ),
            400: OpenApiResponse(ERROR_SCHEMA, "Unknown query field or bad value; the message names it."),
        },
    )
    def post(self, request: Request) -> Response:
        count = usage_count(query=self.usage_query(request, self.body(request)))
        answer: dict[str, Any] = {"count": count["count"]}
        if count["estimated"]:
            answer["countIsEstimate"] = True
        return Response(answer)
