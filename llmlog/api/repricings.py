"""/api/repricings/: re-pricing past usage with the price book as it is now (thin views over
`llmlog.repricing`; the CSV is `llmlog.repricing_report`).

A platform admin only (a platform key with role admin or owner, or a staff session holding the
accounting re-pricing permissions): a re-pricing moves every org's money. An org key gets 403.
"""

from typing import Any

from django.db.models import QuerySet
from django.http import Http404, StreamingHttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import exceptions, mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response

from accounting.ledger import BalanceOverflow, LedgerError
from accounting.models import Repricing
from llmlog.api.access import RoleForAction
from llmlog.api.auth import HasScope, actor_of
from llmlog.api.errors import SingleValuedQueryMixin, field_errors
from llmlog.api.serializers import StrictCharField, money_field
from llmlog.repricing import RepricingInvalid, RepricingStale, repricing_apply, repricing_create
from llmlog.repricing_report import repricing_records_csv

# Re-pricing ids are 64-bit: a larger number names none (and SQLite cannot even compare with it).
MAX_REPRICING_ID = 2**63 - 1

REPRICING_CONFLICT = OpenApiResponse(
    {"type": "object", "properties": {"detail": {"type": "string"}}, "additionalProperties": True},
    "The ledger refuses the adjustments (an org has no account), or the kept dry run is stale: its "
    "records changed since it was made (posted, edited, adjusted by another re-pricing).",
)
RECORDS_CSV = OpenApiResponse(
    OpenApiTypes.STR,
    description="CSV, streamed: one row per record whose amount or cost the re-pricing changes (old, "
    "new, delta; `treatment` adjustment or in_place; the adjustment transaction once applied), then a "
    "totals row.",
)


class RepricingSummaryRowSerializer(serializers.Serializer):
    userorgid = serializers.CharField()
    model_name = serializers.CharField()
    records = serializers.IntegerField(help_text="Records in scope.")
    changed = serializers.IntegerField(help_text="Records whose amount or cost changes.")
    unpriced = serializers.IntegerField(help_text="Records left as they are: no sale price in effect.")
    old_amount = money_field()
    new_amount = money_field()
    old_cost = money_field()
    new_cost = money_field()
    delta_amount = money_field()
    delta_cost = money_field()


class RepricingSerializer(serializers.ModelSerializer):
    summary = RepricingSummaryRowSerializer(many=True, help_text="Per (org, model).")

    class Meta:
        model = Repricing
        fields = (
            "id",
            "start",
            "end",
            "model_name",
            "userorgid",
            "status",
            "records",
            "changed",
            "delta_amount",
            "delta_cost",
            "summary",
            "created_by",
            "created_at",
            "applied_by",
            "applied_at",
        )
        read_only_fields = fields


class StrictBooleanField(serializers.BooleanField):
    """JSON true or false only: DRF would also take "yes", 1, "0"... which the schema says is wrong."""

    def to_internal_value(self, data: Any) -> bool:
        if not isinstance(data, bool):
            self.fail("invalid", input=data)
        return data


class RepricingCreateSerializer(serializers.Serializer):
    start = serializers.DateField(help_text="First use_date (in TIME_ZONE) re-priced.")
    end = serializers.DateField(help_text="Last use_date re-priced, inclusive.")
    model_name = StrictCharField(max_length=150, required=False, allow_blank=True, default="")
    userorgid = StrictCharField(max_length=64, required=False, allow_blank=True, default="")
    apply = StrictBooleanField(
        default=False, help_text="Apply at once; false (the default) keeps a dry run to apply later."
    )

    def validate(self, attrs: dict) -> dict:
        unknown = sorted(set(self.initial_data) - set(self.fields))
        if unknown:
            raise serializers.ValidationError({name: ["Not a field of a re-pricing."] for name in unknown})
        if attrs["end"] < attrs["start"]:
            raise serializers.ValidationError({"end": ["Must not be before start."]})
        return attrs


@extend_schema_view(
    list=extend_schema(summary="Re-pricings, newest first (platform admin)"),
    retrieve=extend_schema(summary="One re-pricing and its report per org and model (platform admin)"),
    create=extend_schema(
        summary="Re-price a range with the price book as it is now: a dry run, or applied at once "
        "(platform admin)",
        request=RepricingCreateSerializer,
        responses={201: RepricingSerializer, 409: REPRICING_CONFLICT},
    ),
)
class RepricingViewSet(
    SingleValuedQueryMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    viewsets.GenericViewSet,
):
    serializer_class = RepricingSerializer
    permission_classes = [IsAuthenticated, HasScope, RoleForAction]
    required_scopes = {"list": "read", "retrieve": "read", "records": "read"}
    platform_admin_actions = ("list", "retrieve", "records", "create", "apply")
    staff_permissions = {
        "list": "accounting.view_repricing",
        "retrieve": "accounting.view_repricing",
        "records": "accounting.view_repricing",
        "create": "accounting.add_repricing",
        "apply": "accounting.change_repricing",
    }
    lookup_value_regex = "[^/]+"

    def get_queryset(self) -> QuerySet[Repricing]:
        return Repricing.objects.order_by("-id")

    def get_object(self) -> Repricing:
        lookup = str(self.kwargs["pk"])
        if not (lookup.isascii() and lookup.isdigit()) or int(lookup) > MAX_REPRICING_ID:
            raise exceptions.ValidationError({"id": f"{lookup!r} is not a re-pricing id (an integer)."})
        return super().get_object()

    def create(self, request: Request) -> Response:
        data = RepricingCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        return self._answer(
            lambda: repricing_create(**data.validated_data, created_by=actor_of(request)),
            status.HTTP_201_CREATED,
        )

    @extend_schema(
        summary="Apply a kept dry run (platform admin); applying an applied one changes nothing",
        request=None,
        responses={200: RepricingSerializer, 409: REPRICING_CONFLICT},
    )
    @action(detail=True, methods=["post"])
    def apply(self, request: Request, pk: str) -> Response:
        repricing = self.get_object()
        return self._answer(
            lambda: repricing_apply(repricing_id=repricing.pk, applied_by=actor_of(request))[0],
            status.HTTP_200_OK,
        )

    @extend_schema(
        summary="The re-pricing's records as CSV, streamed (platform admin)",
        responses={(200, "text/csv"): RECORDS_CSV},
    )
    @action(detail=True, methods=["get"], url_path="records.csv")
    def records(self, request: Request, pk: str) -> StreamingHttpResponse:
        return repricing_records_csv(repricing=self.get_object())

    def perform_content_negotiation(self, request: Request, force: bool = False) -> Any:
        # The CSV is the response's own content type; errors stay JSON whatever the client accepts.
        return super().perform_content_negotiation(request, force=force or self.action == "records")

    @staticmethod
    def _answer(run: Any, success: int) -> Response:
        try:
            repricing = run()
        except RepricingInvalid as exc:
            raise exceptions.ValidationError({exc.field: [exc.message]}) from None
        except Repricing.DoesNotExist:
            raise Http404("No such re-pricing.") from None
        except (RepricingStale, LedgerError) as exc:
            return Response({"detail": str(exc)}, status=status.HTTP_409_CONFLICT)
        except BalanceOverflow as exc:
            raise exceptions.ValidationError(field_errors(exc)) from None
        return Response(RepricingSerializer(repricing).data, status=success)
