import uuid

import msgspec
from django.db.models import QuerySet
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import exceptions, mixins, status, viewsets
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response

from llmlog.api.auth import HasScope, caller_of
from llmlog.api.serializers import BulkIngestResponseSerializer, LLMUsageSerializer, usage_representation
from llmlog.ingest import BodyError, UsageIn, usage_ingest
from llmlog.models import LLMUsage, LLMUsageHistory


def _inline_refs(schema: dict, defs: dict) -> dict:
    """msgspec's JSON schema with its $defs inlined, as drf-spectacular takes a raw schema."""
    if isinstance(schema, dict):
        ref = schema.get("$ref")
        if ref:
            return _inline_refs(defs[ref.rsplit("/", 1)[-1]], defs)
        return {key: _inline_refs(value, defs) for key, value in schema.items() if key != "$defs"}
    if isinstance(schema, list):
        return [_inline_refs(value, defs) for value in schema]
    return schema


_record_schema = msgspec.json.schema(UsageIn)
USAGE_IN_SCHEMA = _inline_refs(_record_schema, _record_schema.get("$defs", {}))
INGEST_REQUEST_SCHEMA = {
    "oneOf": [USAGE_IN_SCHEMA, {"type": "array", "items": USAGE_IN_SCHEMA, "minItems": 1, "maxItems": 1000}]
}


class OrgScopedMixin:
    """An org key sees its org's records only; a record of another org is a 404, never a 403."""

    def scope_to_caller(self, queryset: QuerySet) -> QuerySet:
        caller = caller_of(self.request)
        return queryset if caller.is_platform else queryset.filter(userorgid=caller.userorgid)

    def get_object(self):
        lookup = self.kwargs.get(self.lookup_field)
        try:
            uuid.UUID(str(lookup))
        except ValueError:
            raise exceptions.ValidationError({"id": f"{lookup!r} is not a valid UUID."}) from None
        return super().get_object()


@extend_schema_view(
    list=extend_schema(summary="List usage records (hot table)"),
    retrieve=extend_schema(summary="One usage record"),
)
class LLMUsageViewSet(
    OrgScopedMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet
):
    serializer_class = LLMUsageSerializer
    permission_classes = [IsAuthenticated, HasScope]
    required_scopes = {"list": "read", "retrieve": "read", "create": "ingest"}

    def get_queryset(self) -> QuerySet[LLMUsage]:
        return self.scope_to_caller(LLMUsage.objects.order_by("-use_time", "-id"))

    @extend_schema(
        summary="Ingest one record or a list of up to 1000",
        request={"application/json": INGEST_REQUEST_SCHEMA},
        responses={
            201: OpenApiResponse(LLMUsageSerializer, "Single record created (bulk: a summary, see 207)."),
            200: OpenApiResponse(LLMUsageSerializer, "Same transno and payload again: the existing record."),
            207: OpenApiResponse(BulkIngestResponseSerializer, "Bulk with some items in error or conflict."),
            400: OpenApiResponse(description="Malformed body or invalid record; names the field."),
            409: OpenApiResponse(description="Known transno with a different payload."),
            413: OpenApiResponse(description="Body too large."),
        },
    )
    def create(self, request: Request) -> Response:
        caller = caller_of(request)
        try:
            result = usage_ingest(body=request.body, org=caller.userorgid)
        except BodyError as exc:
            raise exceptions.ParseError(str(exc)) from None
        if result.is_bulk:
            return self._bulk_response(result)
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

    def _bulk_response(self, result) -> Response:
        counts = {
            "created": result.count("created"),
            "duplicates": result.count("duplicate"),
            "conflicts": result.count("conflict"),
            "errors": result.count("error"),
        }
        failed = counts["conflicts"] + counts["errors"]
        if not failed:
            code = status.HTTP_201_CREATED if counts["created"] else status.HTTP_200_OK
        elif failed == len(result.items):
            code = status.HTTP_400_BAD_REQUEST
        else:
            code = status.HTTP_207_MULTI_STATUS
        return Response({**counts, "items": [item.as_dict() for item in result.items]}, status=code)


def _find_usage(pk: str) -> LLMUsage | LLMUsageHistory:
    return LLMUsage.objects.filter(pk=pk).first() or LLMUsageHistory.objects.get(pk=pk)
