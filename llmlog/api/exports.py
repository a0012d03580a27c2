"""/api/exports/: billing exports of a month. `focus/` streams the FOCUS 1.2 CSV (llmlog.exports.focus).

A platform key or a staff session exports every org (or the `userorgid` it names); an org key its own
org only (another org's `userorgid` finds nothing, as every filter of the API)."""

from django.http import StreamingHttpResponse
from django.urls import re_path
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import exceptions
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.views import APIView

from llmlog.api.auth import HasScope, caller_of
from llmlog.api.errors import SingleValuedQueryMixin
from llmlog.api.renderers import JSONRenderer
from llmlog.api.scoping import BAD_INPUT
from llmlog.exports.focus import focus_csv_lines
from llmlog.exports.period import MONTH_PATTERN, InvalidPeriod, month_period
from llmlog.filters import InvalidFilter, unstorable_params

FOCUS_CSV = OpenApiResponse(
    OpenApiTypes.STR,
    description=(
        "FOCUS 1.2 CSV, streamed: a header, then one row per org, model and day (in TIME_ZONE) of the "
        "records the ledger charged in the month. BilledCost sums to the ledger's usage charges."
    ),
)


class FocusExportView(SingleValuedQueryMixin, APIView):
    """The month's charges as FOCUS 1.2 (FinOps Open Cost and Usage Specification) CSV, streamed: one
    row per org, model and day in TIME_ZONE (ChargePeriodStart/End in UTC), BilledCost = ListCost =
    EffectiveCost = what the org was charged, ConsumedQuantity the tokens, `x_` columns for each kind
    of token. Records not yet posted to the ledger (pending, failed) are not charged and not in it."""

    permission_classes = [IsAuthenticated, HasScope]
    required_scopes = {"get": "read"}
    # Errors are JSON whatever the client accepts; the CSV is the response's own content type.
    renderer_classes = [JSONRenderer]

    def perform_content_negotiation(self, request: Request, force: bool = False):
        return super().perform_content_negotiation(request, force=True)

    @extend_schema(
        operation_id="exports_focus_retrieve",
        summary="A month of charges as FOCUS 1.2 CSV",
        parameters=[
            OpenApiParameter(
                "month",
                str,
                OpenApiParameter.QUERY,
                required=True,
                pattern=MONTH_PATTERN,
                description="The month, YYYY-MM; its days are in TIME_ZONE.",
            ),
            OpenApiParameter(
                "userorgid", str, OpenApiParameter.QUERY, description="Only this org (a platform caller)."
            ),
        ],
        responses={(200, "text/csv"): FOCUS_CSV, 400: BAD_INPUT},
    )
    def get(self, request: Request) -> StreamingHttpResponse:
        try:
            unstorable_params(request.query_params)
        except InvalidFilter as error:
            raise exceptions.ValidationError(error.errors) from None
        try:
            period = month_period(request.query_params.get("month", ""))
        except InvalidPeriod as error:
            raise exceptions.ValidationError({"month": [str(error)]}) from None
        userorgid = request.query_params.get("userorgid") or None
        lines = focus_csv_lines(period=period, org=caller_of(request).userorgid, userorgid=userorgid)
        response = StreamingHttpResponse(lines, content_type="text/csv; charset=utf-8")
        response["Content-Disposition"] = f'attachment; filename="focus-{period.label}.csv"'
        return response


urlpatterns = [re_path(r"^exports/focus/?$", FocusExportView.as_view(), name="exports-focus")]
