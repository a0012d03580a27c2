"""AI Proxy's views: `/api/logs/search` and `/api/log/{group}/search`."""

from typing import Any

from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import exceptions
from rest_framework.request import Request
from rest_framework.response import Response

from llmlog.api.dialects.aiproxy.params import log_query
from llmlog.api.dialects.aiproxy.schema import ERROR, PAGING, PARAMETERS, SEARCH_SCHEMA, TAG
from llmlog.api.dialects.aiproxy.shapes import ITEM_COLUMNS, log_facets, log_item
from llmlog.api.dialects.common import DialectView
from llmlog.selectors.records import usage_page
from llmlog.selectors.totals import usage_count


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
        page = PAGING.parse(params)
        query = log_query(params, org=org)
        count = usage_count(query=query)  # every record of every org: an estimate, said so
        rows = usage_page(query=query, offset=page.offset, limit=page.size, columns=ITEM_COLUMNS)
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
