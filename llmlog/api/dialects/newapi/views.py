"""new-api's views: the `/api/log/` family; they parse and shape, the selectors read and retention deletes."""

from dataclasses import replace
from typing import Any

from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import exceptions
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response

from llmlog.api.auth import caller_of
from llmlog.api.dialects.common import (
    NOT_BLANK,
    DialectView,
    bad_input,
    quota_units,
    time_param,
    timestamp_schema,
)
from llmlog.api.dialects.newapi.params import (
    SEARCH_LIMIT,
    TOKEN_LOG_LIMIT,
    gateway_key_hashes,
    keyword_terms,
    log_query,
)
from llmlog.api.dialects.newapi.schema import (
    ERROR,
    FILTER_PARAMETERS,
    KEYWORD,
    LIST_SCHEMA,
    PAGE_PARAMETERS,
    PAGE_SCHEMA,
    PAGING,
    STAT_SCHEMA,
    TAG,
    envelope,
)
from llmlog.api.dialects.newapi.shapes import exact_quota_of_sums, newest_items, ok, quota_sum
from llmlog.models import (
    ApiKey,
    UsageStatus,
)
from llmlog.queries import UsageQuery
from llmlog.retention import usage_delete_before
from llmlog.selectors.records import usage_matching
from llmlog.selectors.stats import usage_rates
from llmlog.selectors.totals import usage_count, usage_total


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
        page = PAGING.parse(params)
        query = log_query(params, org=org)
        count = usage_count(query=query)  # every record of every org: an estimate, said so
        data = {
            "items": newest_items(query, page.size, page.offset),
            "total": count["count"],
            "page": page.number,
            "page_size": page.size,
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
            quota = quota_units(usage_total(query=query)["amount"])
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
