"""GET /api/llmusage/cost-drift/: computed cost beside the cost the gateway or provider reported, by
provider, model and day (llmlog.selectors.drift). Read like the records' cost is: any key with the read
scope, an org key its own org only."""

from typing import Any

from django.urls import re_path
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.generics import GenericAPIView
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response

from core.money import MONEY_PLACES
from llmlog.api.auth import HasScope
from llmlog.api.scoping import BAD_INPUT, FILTER_PARAMETERS, OrgScopedMixin
from llmlog.filters import clean_text
from llmlog.models import ROLLUP_MONEY_DIGITS
from llmlog.queries import InvalidFilter
from llmlog.selectors.drift import MAX_DRIFT_ROWS, usage_cost_drift

PROVIDER_MAX_LENGTH = 64  # the column's


def _sum_field(**kwargs: Any) -> serializers.DecimalField:
    """A sum of many records' money (a difference of two: signed)."""
    return serializers.DecimalField(max_digits=ROLLUP_MONEY_DIGITS, decimal_places=MONEY_PLACES, **kwargs)


class CostDriftRowSerializer(serializers.Serializer):
    day = serializers.DateField(help_text="Day of use_time in TIME_ZONE.")
    provider = serializers.CharField()
    model_name = serializers.CharField()
    records = serializers.IntegerField(help_text="Records of the group under the filters.")
    records_with_both = serializers.IntegerField(help_text="Records with both a cost and a provider_cost.")
    cost = _sum_field(help_text="Computed cost (the price book's), summed over the records with both.")
    provider_cost = _sum_field(help_text="Reported cost, summed over the records with both.")
    delta = _sum_field(help_text="provider_cost - cost.")
    delta_percent = serializers.DecimalField(
        max_digits=40, decimal_places=2, allow_null=True, help_text="delta / cost x 100; null when cost is 0."
    )
    over_threshold = serializers.IntegerField(
        help_text="Records whose |provider_cost - cost| is more than threshold_percent of their cost "
        "(a cost of 0 with a reported cost other than 0 counts)."
    )
    over_share = serializers.DecimalField(
        max_digits=5, decimal_places=4, help_text="over_threshold / records_with_both."
    )


class CostDriftSerializer(serializers.Serializer):
    threshold_percent = serializers.DecimalField(
        max_digits=7, decimal_places=2, help_text="LLMLOG_COST_DRIFT_ALERT."
    )
    max_rows = serializers.IntegerField(help_text="The most rows one answer holds.")
    truncated = serializers.BooleanField(help_text="More rows matched: narrow the time range or filters.")
    rows = CostDriftRowSerializer(many=True, help_text="Newest day first, then provider and model.")


PROVIDER_PARAMETER = OpenApiParameter(
    "provider", str, OpenApiParameter.QUERY, description="Only records of this provider (exact)."
)


class CostDriftView(OrgScopedMixin, GenericAPIView):
    """Provider cost drift under the native filters."""

    permission_classes = [IsAuthenticated, HasScope]
    required_scopes = {"get": "read"}
    staff_permissions = {"get": "llmlog.view_llmusage"}
    serializer_class = CostDriftSerializer

    @extend_schema(
        summary="Provider cost drift: computed vs reported cost by provider, model and day",
        description="Rows by day (in TIME_ZONE), provider and model of the records under the filters "
        "(an org key: its org's) that have both a computed `cost` and a reported `provider_cost`: their "
        "sums, the delta, and how many records differ by more than LLMLOG_COST_DRIFT_ALERT percent. "
        f"At most {MAX_DRIFT_ROWS} rows, newest day first; `truncated` says when more matched. "
        "Money as decimal strings.",
        parameters=[*FILTER_PARAMETERS, PROVIDER_PARAMETER],
        responses={200: CostDriftSerializer, 400: BAD_INPUT},
    )
    def get(self, request: Request) -> Response:
        report = usage_cost_drift(query=self.usage_query(), provider=_provider(request))
        answer = {
            "threshold_percent": report.threshold_percent,
            "max_rows": MAX_DRIFT_ROWS,
            "truncated": report.truncated,
            "rows": report.rows,
        }
        return Response(CostDriftSerializer(answer).data)


def _provider(request: Request) -> str | None:
    value = request.query_params.get("provider")
    if value is None or value == "":
        return None
    if len(value) > PROVIDER_MAX_LENGTH:
        raise InvalidFilter({"provider": [f"At most {PROVIDER_MAX_LENGTH} characters."]})
    return clean_text(value, name="provider")


urlpatterns = [re_path(r"^llmusage/cost-drift/?$", CostDriftView.as_view(), name="llmusage-cost-drift")]
