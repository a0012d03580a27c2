"""What the usage views share: an org key sees its org's records only, the filters as OpenAPI
parameters, the count answer and the id check."""

import uuid
from typing import Any

from django.db.models import QuerySet
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse
from rest_framework import exceptions
from rest_framework.request import Request
from rest_framework.response import Response

from llmlog.api.auth import caller_of
from llmlog.api.errors import SingleValuedQueryMixin
from llmlog.api.serializers import usage_representation
from llmlog.filters import InvalidFilter, UsageFilter, native_query, unstorable_params
from llmlog.queries import ALL, UsageQuery
from llmlog.selectors.records import usage_matching
from llmlog.selectors.rows import usage_record_values
from llmlog.selectors.totals import usage_count


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
        check_uuid(self.kwargs.get(self.lookup_field))
        return super().get_object()

    def retrieve(self, request: Request, pk: str) -> Response:
        """Get-item without a model instance or a serializer: the hottest read, kept to one query."""
        check_uuid(pk)
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
BAD_INPUT = OpenApiResponse(description="A bad parameter; the answer names it.")
NOT_FOUND = OpenApiResponse(description="No such record (or one of another org).")


def count_response(view: OrgScopedMixin, request: Request) -> Response:
    return Response(usage_count(query=view.usage_query()))


def check_uuid(pk: str) -> None:
    try:
        uuid.UUID(str(pk))
    except ValueError:
        raise exceptions.ValidationError({"id": f"{pk!r} is not a valid UUID."}) from None
