from django.db.models import QuerySet
from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import mixins, viewsets
from rest_framework.decorators import action
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response

from llmlog.api.auth import HasScope, caller_of
from llmlog.api.pagination import UsagePagination
from llmlog.api.scoping import BAD_INPUT, FILTER_PARAMETERS, NOT_FOUND, OrgScopedMixin, count_response
from llmlog.api.serializers import LLMUsageHistorySerializer, UsageCountSerializer
from llmlog.filters import UsageFilter, UsageFilterBackend
from llmlog.models import LLMUsageHistory
from llmlog.queries import HISTORY
from llmlog.selectors.records import history_records


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
        return count_response(self, request)
