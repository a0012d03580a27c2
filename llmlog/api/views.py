import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

from django.db.models import QuerySet
from drf_spectacular.types import OpenApiTypes
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

from llmlog.api.adapters import TOO_BIG_ANSWER, bulk_response
from llmlog.api.auth import Caller, HasScope, actor_of, caller_of
from llmlog.api.errors import SingleValuedQueryMixin
from llmlog.api.pagination import UsagePagination
from llmlog.api.schema import openapi_schema
from llmlog.api.serializers import (
    BulkIngestResponseSerializer,
    LLMUsageHistorySerializer,
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
from llmlog.filters import (
    TIME_FILTERS,
    InvalidFilter,
    UsageFilter,
    UsageFilterBackend,
    native_query,
    unstorable_params,
)
from llmlog.ingest.service import usage_ingest
from llmlog.ingest.wire import BodyError, UsageIn
from llmlog.models import LLMUsage, LLMUsageHistory, UsageAll
from llmlog.queries import ALL, HISTORY, UsageQuery
from llmlog.selectors.records import history_records, usage_matching, usage_record, usage_records
from llmlog.selectors.rows import usage_record_values
from llmlog.selectors.stats import usage_rates, usage_stats
from llmlog.selectors.totals import usage_count

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


class OrgScopedMixin(SingleValuedQueryMixin):
    """An org key sees its org's records only; a record of another org is a 404, never a 403."""

    # Any id reaches the view, which answers a 400 for one that is not a UUID (DRF's default, [^/.]+,
    # leaves an id with a dot to Django's HTML 404 page).
    lookup_value_regex = "[^/]+"

    def initial(self, request: Request, *args, **kwargs) -> None:
        super().initial(request, *args, **kwargs)
        # NUL or a lone surrogate in any parameter is a 400 naming it, before any reaches a query.
        unstorable_params(request.query_params, kwargs)

    def handle_exception(self, exc: Exception) -> Response:
        if isinstance(exc, InvalidFilter):  # from any parser or selector: a 400 naming the parameter
            exc = exceptions.ValidationError(exc.errors)
        return super().handle_exception(exc)

    def scope_to_caller(self, queryset: QuerySet) -> QuerySet:
        caller = caller_of(self.request)
        return queryset if caller.is_platform else queryset.filter(userorgid=caller.userorgid)

    # Where the records of this view live (UsageQuery.source).
    query_source = ALL

    def usage_query(self, params: Any = None) -> UsageQuery:
        """The records the request's filter parameters (or `params`) name, in the caller's org."""
        params = self.request.query_params if params is None else params
        return native_query(params=params, org=caller_of(self.request).userorgid, source=self.query_source)

    def list(self, request: Request) -> Response:
        page = self.paginate_queryset(usage_matching(query=self.usage_query()))
        return self.get_paginated_response(self.get_serializer(page, many=True).data)

    def get_object(self):
        _check_uuid(self.kwargs.get(self.lookup_field))
        return super().get_object()

    def retrieve(self, request: Request, pk: str) -> Response:
        """Get-item without a model instance or a serializer: the hottest read, kept to one query."""
        _check_uuid(pk)
        model = self.get_queryset().model
        try:
            record = usage_record_values(org=caller_of(request).userorgid, id=pk, model=model)
        except model.DoesNotExist:
            raise exceptions.NotFound(f"No {model._meta.object_name} matches the given query.") from None
        return Response(usage_representation(record))


def _filter_parameters() -> list[OpenApiParameter]:
    """The filters of llmlog.filters.UsageFilter as OpenAPI query parameters (for the actions that
    drf-spectacular does not read a FilterSet for)."""
    types = {
        "start_time": (str, "date-time or unix seconds / milliseconds"),
        "end_time": (str, "date-time or unix seconds / milliseconds"),
        "use_date": (OpenApiTypes.DATE, None),
        "min_amount": (OpenApiTypes.DECIMAL, None),
        "max_amount": (OpenApiTypes.DECIMAL, None),
    }
    parameters = []
    for name, filter_ in UsageFilter.base_filters.items():
        kind, _ = types.get(name, (str, None))
        choices = getattr(filter_, "extra", {}).get("choices")
        enum = [value for value, _label in choices] if choices else None
        parameters.append(
            OpenApiParameter(name, kind, OpenApiParameter.QUERY, description=filter_.label or "", enum=enum)
        )
    return parameters


SEARCH_PARAMETERS = _filter_parameters()
# count, stats and rates have no order
FILTER_PARAMETERS = [parameter for parameter in SEARCH_PARAMETERS if parameter.name != "ordering"]
KEYWORD_PARAMETER = OpenApiParameter(
    "keyword",
    str,
    OpenApiParameter.QUERY,
    required=True,
    description="Matches id, transno, userid, username, userorgid, model_name or token_name exactly, "
    "or a part of error_message (case-insensitive). Request and response bodies are not searched.",
)
BAD_INPUT = OpenApiResponse(description="A bad parameter; the answer names it.")
NOT_FOUND = OpenApiResponse(description="No such record (or one of another org).")


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
            result = usage_ingest(body=request.body, org=caller.userorgid)
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
        return _count_response(self, request)

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
        responses={
            200: UsageAllSerializer,
            400: BAD_INPUT,
            403: OpenApiResponse(description="Not a platform admin: an org key never changes usage."),
            404: NOT_FOUND,
            409: OpenApiResponse(description="The record is accounted (or in history): immutable."),
        },
    )
    def partial_update(self, request: Request, pk: str) -> Response:
        caller = self._editor(request, pk, doing="change")
        changes = UsagePatchSerializer(data=request.data, partial=True)
        changes.is_valid(raise_exception=True)
        with _edit_errors():
            usage_update(org=caller.userorgid, id=pk, changes=changes.validated_data, actor=actor_of(request))
        return Response(usage_representation(usage_record(org=caller.userorgid, id=pk)))

    @extend_schema(
        summary="Delete a record not yet accounted (platform admin)",
        description="Audited (llmusage_audit keeps the whole record); its open accounting failure closes.",
        responses={
            204: None,
            400: BAD_INPUT,
            403: OpenApiResponse(description="Not a platform admin: an org key never deletes usage."),
            404: NOT_FOUND,
            409: OpenApiResponse(description="The record is accounted (or in history): immutable."),
        },
    )
    def destroy(self, request: Request, pk: str) -> Response:
        caller = self._editor(request, pk, doing="delete")
        with _edit_errors():
            usage_delete(org=caller.userorgid, id=pk, actor=actor_of(request))
        return Response(status=status.HTTP_204_NO_CONTENT)

    @staticmethod
    def _editor(request: Request, pk: str, *, doing: str) -> Caller:
        _check_uuid(pk)
        caller = caller_of(request)
        if not caller.is_platform_admin:
            raise exceptions.PermissionDenied(
                f"Only a platform admin (a platform key with role admin or owner) may {doing} a usage record."
            )
        return caller


@extend_schema_view(
    list=extend_schema(
        summary="List records moved to history",
        responses={200: LLMUsageHistorySerializer(many=True), 400: BAD_INPUT},
    ),
    retrieve=extend_schema(
        summary="One history record",
        responses={
            200: LLMUsageHistorySerializer,
            400: BAD_INPUT,
            404: NOT_FOUND,
        },
    ),
)
class LLMUsageHistoryViewSet(
    OrgScopedMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet
):
    """`llmusage_history`, read-only: accounted records of past days, moved nightly with their id."""

    serializer_class = LLMUsageHistorySerializer
    filter_backends = [UsageFilterBackend]
    filterset_class = UsageFilter
    pagination_class = UsagePagination
    permission_classes = [IsAuthenticated, HasScope]
    required_scopes = {"list": "read", "retrieve": "read", "count": "read"}
    staff_permissions = dict.fromkeys(required_scopes, "llmlog.view_llmusagehistory")

    query_source = HISTORY

    def get_queryset(self) -> QuerySet[LLMUsageHistory]:
        return history_records(org=caller_of(self.request).userorgid)

    @extend_schema(
        summary="Count history records under the filters",
        parameters=FILTER_PARAMETERS,
        responses={200: UsageCountSerializer, 400: BAD_INPUT},
    )
    @action(detail=False, methods=["get"])
    def count(self, request: Request) -> Response:
        return _count_response(self, request)


def _count_response(view: OrgScopedMixin, request: Request) -> Response:
    return Response(usage_count(query=view.usage_query()))


def _check_uuid(pk: str) -> None:
    try:
        uuid.UUID(str(pk))
    except ValueError:
        raise exceptions.ValidationError({"id": f"{pk!r} is not a valid UUID."}) from None


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
