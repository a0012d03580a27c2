"""The budgets API (`/api/budgets/`) and hold admission (`/api/holds/`): thin views over
`accounting.budgets` and `accounting.holds`. Pricing a hold's worst case reads the price book, which is
why these views live on llmlog's side (`accounting` never imports llmlog).

Who may do what:
- budgets: an org key reads its own org's (`read` scope; another org's is a 404); an org key with role
  admin or owner creates, changes and deletes its own org's (naming another org is a 403); a platform
  admin any org's. A staff session: view / add / change / delete_budget.
- holds: a gateway key (`ingest` scope) asks for and releases holds of its own org; only a platform key
  may state `amount` instead of the tokens (an org key's holds are priced from the price book, as its
  records are). Reading holds needs `read`. A staff session: view / add / delete_hold.
"""

from decimal import Decimal
from typing import Any
from uuid import UUID

from django.db.models import QuerySet
from django.utils import timezone
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_view, inline_serializer
from rest_framework import exceptions, mixins, serializers, status, viewsets
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.routers import SimpleRouter

from accounting.budgets import MAX_THRESHOLDS, budget_create, budget_statuses, budget_update
from accounting.holds import MAX_TTL_SECONDS, HoldConflict, HoldRefused, HoldRequest, hold_grant, hold_release
from accounting.models import Budget, Hold
from llmlog.api.access import RoleForAction, given_params
from llmlog.api.auth import Caller, HasScope, actor_of, caller_of
from llmlog.api.errors import SingleValuedQueryMixin, field_errors
from llmlog.api.serializers import StrictCharField, money_field
from llmlog.models import ModelPrice
from llmlog.pricing import PriceBook, TokenCounts, charge

MAX_HOLD_TOKENS = 10**10  # the per-record token bound of ingest (llmlog/limits.py)


def _own_org(caller: Caller, org: str | None, field: str) -> str:
    """The org a write is for: an org key's own (naming another is a 403); a platform caller names it."""
    if caller.is_platform:
        if not org:
            raise exceptions.ValidationError({field: "A platform caller names the org."})
        return org
    if org and org != caller.userorgid:
        raise exceptions.PermissionDenied(f"{field}: an org key acts for its own org only.")
    return caller.userorgid


# --- budgets --------------------------------------------------------------------------------------


class BudgetSerializer(serializers.ModelSerializer):
    """A budget with what it answers now: spent, held and remaining in its current period."""

    has_webhook_secret = serializers.SerializerMethodField()
    spent = serializers.SerializerMethodField()
    held = serializers.SerializerMethodField()
    remaining = serializers.SerializerMethodField()
    period_start = serializers.SerializerMethodField()
    period_end = serializers.SerializerMethodField()

    class Meta:
        model = Budget
        fields = (
            "id",
            "org",
            "name",
            "userid",
            "token_name",
            "model_name",
            "feature",
            "period",
            "time_zone",
            "limit",
            "currency",
            "thresholds",
            "action",
            "webhook_url",
            "has_webhook_secret",
            "spent",
            "held",
            "remaining",
            "period_start",
            "period_end",
            "created_by",
            "created_at",
            "updated_at",
        )
        read_only_fields = fields

    def _status(self, budget: Budget):
        return self.context["statuses"][budget.pk]

    def get_has_webhook_secret(self, budget: Budget) -> bool:
        return bool(budget.webhook_secret)

    def get_spent(self, budget: Budget) -> str:
        return str(self._status(budget).spent)

    def get_held(self, budget: Budget) -> str:
        return str(self._status(budget).held)

    def get_remaining(self, budget: Budget) -> str:
        return str(self._status(budget).remaining)

    def get_period_start(self, budget: Budget) -> str:
        return self._status(budget).period_start.isoformat()

    def get_period_end(self, budget: Budget) -> str | None:
        end = self._status(budget).period_end
        return end.isoformat() if end else None


class BudgetWriteSerializer(serializers.Serializer):
    org = StrictCharField(max_length=64, required=False)
    name = StrictCharField(max_length=150, required=False, allow_blank=True)
    userid = StrictCharField(max_length=64, required=False, allow_blank=True)
    token_name = StrictCharField(max_length=150, required=False, allow_blank=True)
    model_name = StrictCharField(max_length=150, required=False, allow_blank=True)
    feature = StrictCharField(max_length=64, required=False, allow_blank=True)
    period = serializers.ChoiceField(choices=Budget.Period.choices, required=False)
    time_zone = StrictCharField(max_length=64, required=False)
    limit = money_field(min_value=Decimal("0.00001"))
    currency = serializers.RegexField(r"^[A-Z]{3}$", required=False)
    thresholds = serializers.ListField(
        child=serializers.IntegerField(min_value=1, max_value=1000),
        min_length=1,
        max_length=MAX_THRESHOLDS,
        required=False,
    )
    action = serializers.ChoiceField(choices=Budget.Action.choices, required=False)
    webhook_url = serializers.URLField(max_length=500, required=False, allow_blank=True)
    webhook_secret = StrictCharField(max_length=200, required=False, allow_blank=True, write_only=True)


class BudgetUpdateSerializer(BudgetWriteSerializer):
    limit = money_field(min_value=Decimal("0.00001"), required=False)

    def validate(self, attrs: dict) -> dict:
        fixed = sorted(
            set(self.initial_data)
            & {"org", "userid", "token_name", "model_name", "feature", "period", "time_zone", "currency"}
        )
        if fixed:
            raise serializers.ValidationError(
                {name: "Fixed once the budget exists; create another budget instead." for name in fixed}
            )
        if not attrs:
            raise serializers.ValidationError({"non_field_errors": "Send at least one field to change."})
        return attrs


class BudgetQuerySerializer(serializers.Serializer):
    org = serializers.CharField(max_length=64, required=False)
    period = serializers.ChoiceField(choices=Budget.Period.choices, required=False)
    action = serializers.ChoiceField(choices=Budget.Action.choices, required=False)
    token_name = serializers.CharField(max_length=150, required=False)
    userid = serializers.CharField(max_length=64, required=False)


def _budget_page(budgets: list[Budget]) -> dict[str, Any]:
    return {"statuses": {s.budget.pk: s for s in budget_statuses(budgets=budgets)}}


@extend_schema_view(
    list=extend_schema(
        summary="List budgets with spent, held and remaining", parameters=[BudgetQuerySerializer]
    ),
    retrieve=extend_schema(summary="One budget with spent, held and remaining"),
    create=extend_schema(
        summary="Create a budget (org admin for its own org, platform admin for any)",
        request=BudgetWriteSerializer,
        responses={201: BudgetSerializer},
    ),
    partial_update=extend_schema(
        summary="Change a budget's limit, thresholds, action, name or webhook",
        request=BudgetUpdateSerializer,
        responses=BudgetSerializer,
    ),
    destroy=extend_schema(summary="Delete a budget"),
)
class BudgetViewSet(
    SingleValuedQueryMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.DestroyModelMixin,
    viewsets.GenericViewSet,
):
    serializer_class = BudgetSerializer
    permission_classes = [IsAuthenticated, HasScope, RoleForAction]
    required_scopes = {"list": "read", "retrieve": "read"}
    org_admin_actions = ("create", "partial_update", "destroy")
    staff_permissions = {
        "list": "accounting.view_budget",
        "retrieve": "accounting.view_budget",
        "create": "accounting.add_budget",
        "partial_update": "accounting.change_budget",
        "destroy": "accounting.delete_budget",
    }
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]
    # Any id reaches get_object, which names a bad one in a JSON 400: with DRF's default ("[^/.]+") an id
    # such as "0.5" matched no route and fell through to an HTML 403 of another view.
    lookup_value_regex = "[^/]+"

    def get_queryset(self) -> QuerySet[Budget]:
        caller = caller_of(self.request)
        queryset = Budget.objects.order_by("org", "id")
        return queryset if caller.is_platform else queryset.filter(org=caller.userorgid)

    def get_object(self) -> Budget:
        lookup = str(self.kwargs["pk"])
        if not (lookup.isascii() and lookup.isdigit()) or int(lookup) > 2**63 - 1:
            raise exceptions.ValidationError({"id": f"{lookup!r} is not a budget id (an integer)."})
        return super().get_object()

    def list(self, request: Request) -> Response:
        query = BudgetQuerySerializer(data=given_params(request))
        query.is_valid(raise_exception=True)
        page = self.paginate_queryset(self.get_queryset().filter(**query.validated_data))
        return self.get_paginated_response(BudgetSerializer(page, many=True, context=_budget_page(page)).data)

    def retrieve(self, request: Request, pk: str) -> Response:
        budget = self.get_object()
        return Response(BudgetSerializer(budget, context=_budget_page([budget])).data)

    def create(self, request: Request) -> Response:
        data = BudgetWriteSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        params = dict(data.validated_data)
        params["org"] = _own_org(caller_of(request), params.pop("org", None), "org")
        try:
            budget = budget_create(**params, created_by=actor_of(request))
        except ValueError as exc:
            raise exceptions.ValidationError(field_errors(exc)) from None
        return Response(
            BudgetSerializer(budget, context=_budget_page([budget])).data, status=status.HTTP_201_CREATED
        )

    def partial_update(self, request: Request, pk: str) -> Response:
        budget = self.get_object()
        data = BudgetUpdateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            budget = budget_update(budget=budget, **data.validated_data)
        except ValueError as exc:
            raise exceptions.ValidationError(field_errors(exc)) from None
        return Response(BudgetSerializer(budget, context=_budget_page([budget])).data)


# --- holds ----------------------------------------------------------------------------------------


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
    input_tokens = serializers.IntegerField(min_value=0, max_value=MAX_HOLD_TOKENS, required=False, default=0)
    max_output_tokens = serializers.IntegerField(
        min_value=0, max_value=MAX_HOLD_TOKENS, required=False, default=0
    )
    amount = money_field(min_value=0, max_value=Decimal(1_000_000), required=False)
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
        org = _own_org(caller, params.get("userorgid"), "userorgid")
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


# Both `/x` and `/x/`: a POST redirected to add the slash would lose its body.
router = SimpleRouter()
router.trailing_slash = "/?"
router.register("budgets", BudgetViewSet, basename="budget")
router.register("holds", HoldViewSet, basename="hold")

urlpatterns = router.urls
