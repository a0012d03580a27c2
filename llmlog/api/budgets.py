"""The budgets API (`/api/budgets/`): thin views over `accounting.budgets`; the routes of budgets and of
hold admission (`/api/holds/`, `llmlog.api.holds`).

Who may do what: an org key reads its own org's budgets (`read` scope; another org's is a 404); an org
key with role admin or owner creates, changes and deletes its own org's (naming another org is a 403);
a platform admin any org's. A staff session: view / add / change / delete_budget.
"""

from decimal import Decimal
from typing import Any

from django.db.models import QuerySet
from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import exceptions, mixins, serializers, status, viewsets
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.routers import SimpleRouter

from accounting.budgets import (
    MAX_THRESHOLDS,
    UPDATABLE_FIELDS,
    budget_create,
    budget_statuses,
    budget_update,
)
from accounting.models import Budget
from llmlog.api.access import RoleForAction, given_params, own_org
from llmlog.api.auth import HasScope, actor_of, caller_of
from llmlog.api.errors import SingleValuedQueryMixin, field_errors
from llmlog.api.holds import HoldViewSet
from llmlog.api.serializers import StrictCharField, money_field


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
            *Budget.CHOSEN_FIELDS,
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
        fixed = sorted(set(self.initial_data) & (set(self.fields) - set(UPDATABLE_FIELDS)))
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
        params["org"] = own_org(caller_of(request), params.pop("org", None), "org")
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


# Both `/x` and `/x/`: a POST redirected to add the slash would lose its body.
router = SimpleRouter()
router.trailing_slash = "/?"
router.register("budgets", BudgetViewSet, basename="budget")
router.register("holds", HoldViewSet, basename="hold")

urlpatterns = router.urls
