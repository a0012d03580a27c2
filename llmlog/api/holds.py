"""Hold admission (`/api/holds/`): thin views over `accounting.holds`. Pricing a hold's worst case
reads the price book, which is why these views live on llmlog's side (`accounting` never imports llmlog).

Who may do what: a gateway key (`ingest` scope) asks for and releases holds of its own org; only a
platform key may state `amount` instead of the tokens (an org key's holds are priced from the price
book, as its records are). Reading holds needs `read`. A staff session: view / add / delete_hold.
"""

from decimal import Decimal
from uuid import UUID

from django.db.models import QuerySet
from django.utils import timezone
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_view, inline_serializer
from rest_framework import exceptions, mixins, serializers, status, viewsets
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response

from accounting.holds import MAX_TTL_SECONDS, HoldConflict, HoldRefused, HoldRequest, hold_grant, hold_release
from accounting.models import Hold
from llmlog.api.access import given_params, own_org
from llmlog.api.auth import HasScope, actor_of, caller_of
from llmlog.api.errors import SingleValuedQueryMixin, field_errors
from llmlog.api.serializers import StrictCharField, money_field
from llmlog.limits import MAX_MONEY, MAX_TOKENS
from llmlog.models import ModelPrice
from llmlog.pricing import PriceBook, TokenCounts, charge


class HoldSerializer(serializers.ModelSerializer):
    userorgid = serializers.CharField(source="org")

    class Meta:
        model = Hold
        fields = (
            "id",
            "userorgid",
            "transno",
            "userid",
            "token_name",
            "model_name",
            "feature",
            "amount",
            "currency",
            "status",
            "created_at",
            "expires_at",
            "ended_at",
        )
        read_only_fields = fields


class HoldCreateSerializer(serializers.Serializer):
    transno = StrictCharField(max_length=128)
    userorgid = StrictCharField(max_length=64, required=False)
    userid = StrictCharField(max_length=64, required=False, default="", allow_blank=True)
    token_name = StrictCharField(max_length=150, required=False, default="", allow_blank=True)
    model_name = StrictCharField(max_length=150, required=False, default="", allow_blank=True)
    feature = StrictCharField(max_length=64, required=False, default="", allow_blank=True)
    input_tokens = serializers.IntegerField(min_value=0, max_value=MAX_TOKENS, required=False, default=0)
    max_output_tokens = serializers.IntegerField(min_value=0, max_value=MAX_TOKENS, required=False, default=0)
    amount = money_field(min_value=0, max_value=MAX_MONEY, required=False)
    ttl_seconds = serializers.IntegerField(min_value=1, max_value=MAX_TTL_SECONDS, required=False)

    def validate(self, attrs: dict) -> dict:
        if "amount" not in attrs and not attrs.get("model_name"):
            raise serializers.ValidationError(
                {"model_name": "Name the model, to price the call's worst case."}
            )
        return attrs


HoldRefusedSerializer = inline_serializer(
    "HoldRefused",
    {
        "code": serializers.ChoiceField(["insufficient_balance", "budget_exceeded"]),
        "budget": serializers.IntegerField(allow_null=True),
        "remaining": serializers.CharField(),
        "detail": serializers.CharField(),
    },
)


def worst_case(*, model_name: str, input_tokens: int, max_output_tokens: int) -> Decimal:
    """The most the call can cost at the sale price in effect now: every input token uncached, every
    output token at the dearer of the output and reasoning prices. 400 when the model has no price."""
    price = PriceBook.for_models([model_name]).find(model_name, ModelPrice.Kind.SALE, timezone.now())
    if price is None:
        raise exceptions.ValidationError(
            {"model_name": f"No price for {model_name!r} now: a hold is priced from the price book."}
        )
    reasoning_dearer = price.reasoning_price is not None and price.reasoning_price > price.output_price
    counts = TokenCounts(
        input_tokens=input_tokens,
        output_tokens=max_output_tokens,
        reasoning_tokens=max_output_tokens if reasoning_dearer else 0,
    )
    return charge(price, counts)


@extend_schema_view(
    list=extend_schema(summary="List holds (an org key: its own org's)"),
    retrieve=extend_schema(summary="One hold"),
    create=extend_schema(
        summary="Admission: reserve an LLM call's worst case before making it",
        request=HoldCreateSerializer,
        responses={
            201: HoldSerializer,
            200: OpenApiResponse(HoldSerializer, "This transno's hold, granted before."),
            402: HoldRefusedSerializer,
            409: OpenApiResponse(description="The transno has a hold of another amount or scope."),
        },
    ),
    destroy=extend_schema(summary="Release a hold (the call was not made)", responses=HoldSerializer),
)
class HoldViewSet(
    SingleValuedQueryMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    viewsets.GenericViewSet,
):
    serializer_class = HoldSerializer
    permission_classes = [IsAuthenticated, HasScope]
    required_scopes = {"list": "read", "retrieve": "read", "create": "ingest", "destroy": "ingest"}
    staff_permissions = {
        "list": "accounting.view_hold",
        "retrieve": "accounting.view_hold",
        "create": "accounting.add_hold",
        "destroy": "accounting.delete_hold",
    }
    lookup_value_regex = "[^/]+"
    http_method_names = ["get", "post", "delete", "head", "options"]

    def get_queryset(self) -> QuerySet[Hold]:
        caller = caller_of(self.request)
        queryset = Hold.objects.order_by("-id")
        status_filter = given_params(self.request).get("status") if self.action == "list" else None
        if status_filter is not None:
            if status_filter not in Hold.Status.values:
                raise exceptions.ValidationError(
                    {"status": f"Must be one of {', '.join(Hold.Status.values)}."}
                )
            queryset = queryset.filter(status=status_filter)
        return queryset if caller.is_platform else queryset.filter(org=caller.userorgid)

    def get_object(self) -> Hold:
        try:
            UUID(str(self.kwargs["pk"]))
        except ValueError:
            raise exceptions.ValidationError(
                {"id": f"{self.kwargs['pk']!r} is not a hold id (a UUID)."}
            ) from None
        return super().get_object()

    def create(self, request: Request) -> Response:
        data = HoldCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        params = data.validated_data
        caller = caller_of(request)
        if "amount" in params and not caller.is_platform:
            raise exceptions.PermissionDenied("amount: only a platform key may state a hold's amount.")
        org = own_org(caller, params.get("userorgid"), "userorgid")
        amount = params.get("amount")
        if amount is None:
            amount = worst_case(
                model_name=params["model_name"],
                input_tokens=params["input_tokens"],
                max_output_tokens=params["max_output_tokens"],
            )
        hold_request = HoldRequest(
            org=org,
            transno=params["transno"],
            amount=amount,
            userid=params["userid"],
            token_name=params["token_name"],
            model_name=params["model_name"],
            feature=params["feature"],
            ttl_seconds=params.get("ttl_seconds"),
            created_by=actor_of(request),
        )
        try:
            hold, created = hold_grant(request=hold_request)
        except HoldRefused as exc:
            body = {
                "code": exc.code,
                "budget": exc.budget,
                "remaining": str(exc.remaining),
                "detail": exc.detail,
            }
            return Response(body, status=status.HTTP_402_PAYMENT_REQUIRED)
        except HoldConflict as exc:
            return Response({"detail": str(exc)}, status=status.HTTP_409_CONFLICT)
        except ValueError as exc:
            raise exceptions.ValidationError(field_errors(exc)) from None
        return Response(
            HoldSerializer(hold).data, status=status.HTTP_201_CREATED if created else status.HTTP_200_OK
        )

    def destroy(self, request: Request, pk: str) -> Response:
        return Response(HoldSerializer(hold_release(hold=self.get_object())).data)
