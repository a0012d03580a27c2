"""OneUptime's views: get-list, get-item and count; they parse and shape."""

import json
import uuid
from collections.abc import Mapping
from typing import Any

from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import exceptions
from rest_framework.request import Request
from rest_framework.response import Response

from core.text import text_problem
from llmlog.api.dialects.common import (
    MAX_PAGE_SIZE,
    DialectView,
    bad_input,
    check_page_depth,
    int_param,
)
from llmlog.api.dialects.oneuptime.fields import DEFAULT_LIMIT, columns_for, parse_select, shape
from llmlog.api.dialects.oneuptime.params import log_query
from llmlog.api.dialects.oneuptime.schema import ERROR_SCHEMA, QUERY_SCHEMA, item_schema, list_schema
from llmlog.models import UsageAll
from llmlog.queries import UsageQuery
from llmlog.selectors.records import usage_page
from llmlog.selectors.rows import usage_record_values
from llmlog.selectors.totals import usage_count


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
        """The records the body's `query` names in the caller's project (org)."""
        return log_query(body, org=self.org(request), sort=sort)


class LLMLogListView(OneUptimeView):
    @list_schema("POST")
    def post(self, request: Request) -> Response:
        return self.answer(request)

    @list_schema("GET")
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


class LLMLogItemView(OneUptimeView):
    @item_schema("POST")
    def post(self, request: Request, pk: str) -> Response:
        return self.answer(request, pk)

    @item_schema("GET")
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
