"""An org's monthly statements (`/api/accounts/{org}/statements/`, `/{YYYY-MM}`): the closed months of its
customer account, read from their stored snapshots (accounting.statements closes them; nothing here
computes a figure). Who may read: as the accounts routes, an org key its own org (another org's is a
404), a platform key or a staff session with `accounting.view_statement` any org."""

import csv
import io
import re
from typing import Any

from django.db.models import QuerySet
from django.http import Http404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import exceptions, renderers, serializers, viewsets
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response

from accounting.models import Account, Statement
from accounting.statements import parse_month
from llmlog.api.access import RoleForAction, checked_org
from llmlog.api.auth import HasScope, caller_of
from llmlog.api.errors import SingleValuedQueryMixin
from llmlog.api.renderers import JSONRenderer
from llmlog.api.serializers import money_field

# An org is any text: its file name keeps letters, digits, dot, dash and underscore (no quote, no newline).
UNSAFE_FILENAME = re.compile(r"[^A-Za-z0-9._-]")

# A statement's month, period and figures: the list answers them for each month, and the CSV gives them
# a row each (after the org), before the breakdowns.
STATEMENT_FIELDS = (
    "month",
    "currency",
    "time_zone",
    "period_start",
    "period_end",
    "opening_balance",
    "charges",
    "topups",
    "adjustments",
    "closing_balance",
    "requests",
    "closed_at",
)
SUMMARY_FIELDS = ("org", *STATEMENT_FIELDS)


class StatementCSVRenderer(renderers.BaseRenderer):
    """`?format=csv` or `Accept: text/csv`: the statement as a spreadsheet reads it. Errors stay JSON
    (StatementViewSet.finalize_response), as the schema documents them."""

    media_type = "text/csv"
    format = "csv"
    charset = "utf-8"

    def render(self, data: Any, accepted_media_type=None, renderer_context=None) -> bytes:
        out = io.StringIO()
        statement_csv(csv.writer(out, lineterminator="\n"), data)
        return out.getvalue().encode()


def is_statement(data: Any) -> bool:
    return isinstance(data, dict) and "by_model" in data and "by_day" in data


def statement_csv(writer: Any, data: dict[str, Any]) -> None:
    writer.writerow(["section", "key", "requests", "input_tokens", "output_tokens", "amount"])
    for name in SUMMARY_FIELDS:
        writer.writerow(["statement", name, "", "", "", data[name]])
    for row in data["by_model"]:
        writer.writerow(
            [
                "by_model",
                row["model_name"],
                row["requests"],
                row["input_tokens"],
                row["output_tokens"],
                row["charges"],
            ]
        )
    for row in data["by_day"]:
        writer.writerow(["by_day", row["date"] or "", row["requests"], "", "", row["charges"]])


class StatementListItemSerializer(serializers.ModelSerializer):
    month = serializers.CharField(source="month_text", help_text="YYYY-MM")
    opening_balance = money_field()
    charges = money_field(help_text="What usage took from the account in the month.")
    topups = money_field()
    adjustments = money_field(help_text="Operator adjustments and re-pricing, signed.")
    closing_balance = money_field(help_text="opening_balance - charges + topups + adjustments")

    class Meta:
        model = Statement
        fields = STATEMENT_FIELDS
        read_only_fields = fields


class ModelChargesSerializer(serializers.Serializer):
    model_name = serializers.CharField()
    requests = serializers.IntegerField()
    input_tokens = serializers.IntegerField()
    output_tokens = serializers.IntegerField()
    charges = money_field()


class DayChargesSerializer(serializers.Serializer):
    date = serializers.DateField(allow_null=True, help_text="The records' use_date (null: records purged).")
    requests = serializers.IntegerField()
    charges = money_field()


class StatementSerializer(serializers.Serializer):
    """The stored snapshot, as it was when the month closed (schema only: the view answers it as stored)."""

    org = serializers.CharField()
    month = serializers.CharField(help_text="YYYY-MM")
    currency = serializers.CharField()
    time_zone = serializers.CharField()
    period_start = serializers.DateTimeField()
    period_end = serializers.DateTimeField(help_text="Exclusive: the next month's first instant.")
    opening_balance = money_field()
    charges = money_field()
    topups = money_field()
    adjustments = money_field()
    closing_balance = money_field()
    requests = serializers.IntegerField()
    by_model = ModelChargesSerializer(many=True)
    by_day = DayChargesSerializer(many=True)
    closed_at = serializers.DateTimeField()


ORG = OpenApiParameter("org", OpenApiTypes.STR, OpenApiParameter.PATH, description="The org (userorgid).")
MONTH = OpenApiParameter(
    "month", OpenApiTypes.STR, OpenApiParameter.PATH, description="The closed month, as YYYY-MM."
)


@extend_schema_view(
    list=extend_schema(
        summary="An org's closed months, newest first, with their totals",
        parameters=[ORG],
        responses=StatementListItemSerializer(many=True),
    ),
    retrieve=extend_schema(
        summary="One closed month's statement (JSON, or CSV with ?format=csv or Accept: text/csv)",
        parameters=[ORG, MONTH],
        responses={
            (200, "application/json"): StatementSerializer,
            (200, "text/csv"): OpenApiResponse(OpenApiTypes.STR, "The statement as CSV."),
        },
    ),
)
class StatementViewSet(SingleValuedQueryMixin, viewsets.GenericViewSet):
    """A closed month of the org's customer account, as stored when it closed: opening balance, charges,
    top-ups, adjustments, closing balance (opening - charges + top-ups + adjustments), and the charges by
    model and by day of use. A month not closed is a 404 (close_period, or the job on the 1st)."""

    permission_classes = [IsAuthenticated, HasScope, RoleForAction]
    required_scopes = {"list": "read", "retrieve": "read"}
    staff_permissions = {"list": "accounting.view_statement", "retrieve": "accounting.view_statement"}
    renderer_classes = [JSONRenderer, StatementCSVRenderer]
    serializer_class = StatementListItemSerializer
    lookup_field = "month"
    lookup_value_regex = "[^/]+"  # any text, so that a bad month is a 400 naming it, not a 404

    def get_renderers(self) -> list[renderers.BaseRenderer]:
        if getattr(self, "action", None) == "list":
            return [JSONRenderer()]
        return super().get_renderers()

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        super().initial(request, *args, **kwargs)
        checked_org(kwargs["org"])

    def finalize_response(self, request: Request, response: Any, *args: Any, **kwargs: Any) -> Any:
        """Anything but a statement (an error, OPTIONS) is JSON, whatever format was asked for."""
        response = super().finalize_response(request, response, *args, **kwargs)
        if isinstance(response, Response) and not is_statement(response.data):
            response.accepted_renderer = JSONRenderer()
            response.accepted_media_type = JSONRenderer.media_type
        return response

    def account(self) -> Account:
        """The org's customer account, if the caller may see it; else a 404."""
        org = self.kwargs["org"]
        caller = caller_of(self.request)
        if not caller.is_platform and caller.userorgid != org:
            raise Http404(f"No account of org {org!r}.")
        account = Account.objects.filter(org=org, kind=Account.Kind.CUSTOMER).first()
        if account is None:
            raise Http404(f"Org {org!r} has no customer account.")
        return account

    def get_queryset(self) -> QuerySet[Statement]:
        if getattr(self, "swagger_fake_view", False):  # the schema generator: no request, no org
            return Statement.objects.none()
        return Statement.objects.filter(account=self.account()).order_by("-month")

    def list(self, request: Request, org: str) -> Response:
        page = self.paginate_queryset(self.get_queryset().defer("data"))
        return self.get_paginated_response(StatementListItemSerializer(page, many=True).data)

    def retrieve(self, request: Request, org: str, month: str) -> Response:
        try:
            first_day = parse_month(month)
        except ValueError:
            raise exceptions.ValidationError(
                {"month": "Expected a month as YYYY-MM, such as 2026-11."}
            ) from None
        statement = self.get_queryset().filter(month=first_day).first()
        if statement is None:
            raise Http404(f"{first_day:%Y-%m} of org {org!r} is not closed.")
        headers = {}
        if request.accepted_renderer.format == "csv":
            name = UNSAFE_FILENAME.sub("_", org)
            headers["Content-Disposition"] = f'attachment; filename="statement-{name}-{first_day:%Y-%m}.csv"'
        return Response(statement.data, headers=headers)
