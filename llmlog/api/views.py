from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace

from django.conf import settings
from django.db.models import QuerySet
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    PolymorphicProxySerializer,
    extend_schema,
    extend_schema_view,
)
from rest_framework import exceptions, mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response

from llmlog.api.adapters import TOO_BIG_ANSWER, bulk_response, read_body
from llmlog.api.auth import Caller, HasScope, actor_of, caller_of
from llmlog.api.pagination import UsagePagination
from llmlog.api.schema import openapi_schema
from llmlog.api.scoping import (
    BAD_INPUT,
    FILTER_PARAMETERS,
    NOT_FOUND,
    SEARCH_PARAMETERS,
    OrgScopedMixin,
    check_uuid,
    count_response,
)
from llmlog.api.serializers import (
    BulkIngestResponseSerializer,
    LLMUsageSerializer,
    UsageAllSerializer,
    UsageCountSerializer,
    UsagePatchSerializer,
    UsageRatesSerializer,
    UsageStatsSerializer,
    usage_representation,
)
from llmlog.bodies import TooBig
from llmlog.edits import UsageImmutable, usage_delete, usage_update
from llmlog.filters import TIME_FILTERS, UsageFilter, UsageFilterBackend
from llmlog.ingest.service import usage_ingest
from llmlog.ingest.wire import BodyError, UsageIn
from llmlog.models import LLMUsage, LLMUsageHistory, UsageAll
from llmlog.replicas import PRIMARY, reading_from
from llmlog.selectors.records import usage_matching, usage_record, usage_records
from llmlog.selectors.stats import usage_rates, usage_stats

USAGE_IN_SCHEMA = openapi_schema(UsageIn)
INGEST_REQUEST_SCHEMA = {
    "oneOf": [USAGE_IN_SCHEMA, {"type": "array", "items": USAGE_IN_SCHEMA, "minItems": 1, "maxItems": 1000}]
}
# A single record is answered with the record, a list with the summary of its items.
INGEST_ANSWER = PolymorphicProxySerializer(
    component_name="IngestAnswer",
    serializers=[LLMUsageSerializer, BulkIngestResponseSerializer],
    resource_type_field_name=None,
)


KEYWORD_PARAMETER = OpenApiParameter(
    "keyword",
    str,
    OpenApiParameter.QUERY,
    required=True,
    description="Matches id, transno, userid, username, userorgid, model_name or token_name exactly, "
    "or a part of error_message (case-insensitive). Request and response bodies are not searched.",
)


def _edit_responses(*, doing: str, done: dict) -> dict:
    """An operator's edit of a record ("change" or "delete"): `done`, or the refusals both edits share
    (_editor: not a platform admin; _edit_errors: no such record, or accounted)."""
    return {
        **done,
        400: BAD_INPUT,
        403: OpenApiResponse(description=f"Not a platform admin: an org key never {doing}s usage."),
        404: NOT_FOUND,
        409: OpenApiResponse(description="The record is accounted (or in history): immutable."),
    }


@extend_schema_view(
    list=extend_schema(
        summary="List usage records (hot and history)",
        description="Newest first unless `ordering` says otherwise. No total: ask `/count/`. "
        "Page numbers reach the first 10,000 records; `next_cursor` reads any depth.",
        responses={200: UsageAllSerializer(many=True), 400: BAD_INPUT},
    ),
    retrieve=extend_schema(
        summary="One usage record, hot or history",
        responses={200: UsageAllSerializer, 400: BAD_INPUT, 404: NOT_FOUND},
    ),
)
class LLMUsageViewSet(
    OrgScopedMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet
):
    """Usage records wherever they live (the llmusage_all view): a time range answers the same before
    and after the nightly move to history. An org key sees its org's records only."""

    serializer_class = UsageAllSerializer
    filter_backends = [UsageFilterBackend]
    filterset_class = UsageFilter
    pagination_class = UsagePagination
    permission_classes = [IsAuthenticated, HasScope]
    required_scopes = {
        "list": "read",
        "retrieve": "read",
        "count": "read",
        "search": "read",
        "stats": "read",
        "rates": "read",
        "create": "ingest",
        "partial_update": "ingest",
        "destroy": "ingest",
    }
    # A staff session's Django permission per action; read actions need view_llmusage, ingest
    # add_llmusage (llmlog.api.auth.required_permission).
    staff_permissions = {"partial_update": "llmlog.change_llmusage", "destroy": "llmlog.delete_llmusage"}

    def get_queryset(self) -> QuerySet[UsageAll]:
        return usage_records(org=caller_of(self.request).userorgid)

    @extend_schema(
        summary="Ingest one record or a list of up to 1000",
        request={"application/json": INGEST_REQUEST_SCHEMA},
        responses={
            201: OpenApiResponse(INGEST_ANSWER, "Created: the record (a list: the summary of its items)."),
            200: OpenApiResponse(
                INGEST_ANSWER, "Nothing new: the existing record (a list: the summary of its items)."
            ),
            207: OpenApiResponse(BulkIngestResponseSerializer, "Bulk with some items in error or conflict."),
            400: OpenApiResponse(description="Malformed body or invalid record; names the field."),
            403: OpenApiResponse(
                description="An org key stated amount, cost, ownerid or price (a platform key's only); "
                "nothing is stored."
            ),
            409: OpenApiResponse(description="Known transno of the same org with a different payload."),
            413: OpenApiResponse(
                TOO_BIG_ANSWER, "Body too large, or more than 1000 records (LLMLOG_BULK_MAX); nothing stored."
            ),
        },
    )
    def create(self, request: Request) -> Response:
        caller = caller_of(request)
        try:
            # gzip too, as the adapters take it; at most DATA_UPLOAD_MAX_MEMORY_SIZE, inflated or not.
            body = read_body(request, limit=settings.DATA_UPLOAD_MAX_MEMORY_SIZE)
            result = usage_ingest(body=body, org=caller.userorgid)
        except BodyError as exc:
            raise exceptions.ParseError(str(exc)) from None
        except TooBig as exc:
            return Response(exc.as_dict(), status=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE)
        if result.is_bulk:
            return bulk_response(result)
        return self._single_response(result.items[0])

    def _single_response(self, item) -> Response:
        if item.status == "error":
            return Response({"detail": "Invalid record.", "errors": item.errors}, status=400)
        if item.status == "conflict":
            return Response(
                {"detail": item.errors["transno"], "transno": item.transno, "id": item.id},
                status=status.HTTP_409_CONFLICT,
            )
        if item.status == "created":
            return Response(usage_representation(item.row), status=status.HTTP_201_CREATED)
        return Response(usage_representation(_find_usage(item.id)), status=status.HTTP_200_OK)

    @extend_schema(
        summary="Count usage records under the filters",
        parameters=FILTER_PARAMETERS,
        responses={200: UsageCountSerializer, 400: BAD_INPUT},
        description="Exact under any filter. Unfiltered, for a platform key, PostgreSQL answers from the "
        "planner's statistics and the answer says `estimated: true`.",
    )
    @action(detail=False, methods=["get"])
    def count(self, request: Request) -> Response:
        return count_response(self, request)

    @extend_schema(
        summary="Search usage records by keyword",
        parameters=[KEYWORD_PARAMETER, *SEARCH_PARAMETERS],
        responses={200: UsageAllSerializer(many=True), 400: BAD_INPUT},
    )
    @action(detail=False, methods=["get"])
    def search(self, request: Request) -> Response:
        keyword = request.query_params.get("keyword", "").strip()
        if not keyword:
            raise exceptions.ValidationError({"keyword": ["Required: the text to look for."]})
        query = replace(self.usage_query(), keyword=keyword)
        page = self.paginate_queryset(usage_matching(query=query))
        return self.get_paginated_response(self.get_serializer(page, many=True).data)

    @extend_schema(
        summary="Usage totals, RPM/TPM, by model and by day, under the filters",
        parameters=FILTER_PARAMETERS,
        responses={200: UsageStatsSerializer, 400: BAD_INPUT},
        description="requests, tokens by kind, amount and cost under the filters; rpm and tpm over the "
        "last 60 seconds (same filters, without the time range); by_model and by_day (days in TIME_ZONE). "
        "Whole closed hours are read from the hourly rollups, the rest from the rows.",
    )
    @action(detail=False, methods=["get"])
    def stats(self, request: Request) -> Response:
        return Response(UsageStatsSerializer(usage_stats(query=self.usage_query())).data)

    @extend_schema(
        summary="RPM and TPM: requests and total tokens started in the last 60 seconds",
        parameters=[p for p in FILTER_PARAMETERS if p.name not in TIME_FILTERS],
        responses={200: UsageRatesSerializer, 400: BAD_INPUT},
        description="Under the same filters as the list, without a time range (the window is the last "
        "minute). `/stats/` answers these too, beside everything else.",
    )
    @action(detail=False, methods=["get"])
    def rates(self, request: Request) -> Response:
        # The window is the last minute: a time range is not read (nor refused), whatever it says.
        params = {name: value for name, value in request.query_params.items() if name not in TIME_FILTERS}
        return Response(usage_rates(query=self.usage_query(params)))

    @extend_schema(
        summary="Correct a record not yet accounted (platform admin)",
        description="Only a platform admin (a platform key with role admin or owner, or a staff session "
        "with the change permission) changes a usage record: its fields decide what an org is charged "
        "and which budgets it counts against. Every change is audited (llmusage_audit).",
        request=UsagePatchSerializer,
        responses=_edit_responses(doing="change", done={200: UsageAllSerializer}),
    )
    def partial_update(self, request: Request, pk: str) -> Response:
        caller = self._editor(request, pk, doing="change")
        changes = UsagePatchSerializer(data=request.data, partial=True)
        changes.is_valid(raise_exception=True)
        with _edit_errors():
            usage_update(org=caller.userorgid, id=pk, changes=changes.validated_data, actor=actor_of(request))
        with reading_from(PRIMARY):  # the record as just changed: never a replica's older copy
            record = usage_record(org=caller.userorgid, id=pk)
        return Response(usage_representation(record))

    @extend_schema(
        summary="Delete a record not yet accounted (platform admin)",
        description="Audited (llmusage_audit keeps the whole record); its open accounting failure closes.",
        responses=_edit_responses(doing="delete", done={204: None}),
    )
    def destroy(self, request: Request, pk: str) -> Response:
        caller = self._editor(request, pk, doing="delete")
        with _edit_errors():
            usage_delete(org=caller.userorgid, id=pk, actor=actor_of(request))
        return Response(status=status.HTTP_204_NO_CONTENT)

    @staticmethod
    def _editor(request: Request, pk: str, *, doing: str) -> Caller:
        check_uuid(pk)
        caller = caller_of(request)
        if not caller.is_platform_admin:
            raise exceptions.PermissionDenied(
                f"Only a platform admin (a platform key with role admin or owner) may {doing} a usage record."
            )
        return caller


@contextmanager
def _edit_errors() -> Iterator[None]:
    try:
        yield
    except LLMUsage.DoesNotExist:
        raise exceptions.NotFound("No such record.") from None
    except UsageImmutable as exc:
        raise Conflict(str(exc)) from None


class Conflict(exceptions.APIException):
    status_code = status.HTTP_409_CONFLICT
    default_detail = "Conflict."
    default_code = "conflict"


def _find_usage(pk: str) -> LLMUsage | LLMUsageHistory:
    return LLMUsage.objects.filter(pk=pk).first() or LLMUsageHistory.objects.get(pk=pk)
