"""Accounts, their ledger lines and top-ups (`/api/accounts/`): thin views over `accounting.accounts`
and `accounting.ledger`. Who may do what: llmlog/api/accounting.py."""

from typing import Any

from django.db.models import QuerySet
from django.http import Http404
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view, inline_serializer
from rest_framework import exceptions, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response

from accounting.accounts import AccountExists, account_create, account_update
from accounting.ledger import BalanceOverflow, LedgerError, ledger_topup
from accounting.models import Account, LedgerLine
from llmlog.api.access import CONFLICT, RoleForAction, checked_org, given_params
from llmlog.api.auth import HasScope, actor_of, caller_of
from llmlog.api.errors import SingleValuedQueryMixin, field_errors
from llmlog.api.serializers import StrictCharField, StrictRegexField, money_field


class AccountSerializer(serializers.ModelSerializer):
    class Meta:
        model = Account
        fields = (
            "id",
            "org",
            "kind",
            "currency",
            "balance",
            "credit_limit",
            "status",
            "time_zone",
            "created_at",
            "updated_at",
        )
        read_only_fields = fields


class AccountCreateSerializer(serializers.Serializer):
    org = StrictCharField(max_length=64)
    kind = serializers.ChoiceField(choices=Account.CREATABLE_KIND_CHOICES)
    currency = StrictRegexField(
        r"^[A-Z]{3}$", default="USD", error_messages={"invalid": "Expected a 3-letter ISO code such as USD."}
    )
    credit_limit = money_field(min_value=0, default=0)
    status = serializers.ChoiceField(choices=Account.Status.choices, default=Account.Status.ACTIVE)
    time_zone = StrictCharField(
        max_length=64,
        required=False,
        help_text="The IANA zone of the statements' months (default TIME_ZONE).",
    )


class AccountUpdateSerializer(serializers.Serializer):
    kind = serializers.ChoiceField(choices=Account.CREATABLE_KIND_CHOICES, default="customer")
    credit_limit = money_field(min_value=0, required=False)
    status = serializers.ChoiceField(choices=Account.Status.choices, required=False)
    time_zone = StrictCharField(
        max_length=64, required=False, help_text="The IANA zone of the statements' months (next close on)."
    )

    def validate(self, attrs: dict) -> dict:
        if not {"credit_limit", "status", "time_zone"} & attrs.keys():
            raise serializers.ValidationError({"credit_limit": "Send credit_limit, status or time_zone."})
        return attrs


class AccountQuerySerializer(serializers.Serializer):
    org = serializers.CharField(max_length=64, required=False)
    kind = serializers.ChoiceField(choices=Account.Kind.choices, required=False)
    status = serializers.ChoiceField(choices=Account.Status.choices, required=False)
    currency = serializers.CharField(max_length=3, required=False)


class TopupSerializer(serializers.Serializer):
    amount = money_field()
    kind = serializers.ChoiceField(choices=[Account.Kind.CUSTOMER, Account.Kind.OWNER], default="customer")
    reference = StrictCharField(max_length=128, required=False, default="", allow_blank=True)
    memo = StrictCharField(max_length=255, required=False, default="", allow_blank=True)

    def validate_amount(self, value):
        if value <= 0:
            raise serializers.ValidationError("A top-up must be positive.")
        return value


class OrgAccountsSerializer(serializers.Serializer):
    org = serializers.CharField()
    accounts = AccountSerializer(many=True)


class LedgerLineSerializer(serializers.ModelSerializer):
    org = serializers.CharField(source="account.org")
    account_kind = serializers.CharField(source="account.kind")
    currency = serializers.CharField(source="account.currency")
    transaction_id = serializers.UUIDField()
    transaction_kind = serializers.CharField(source="transaction.kind")
    reference = serializers.CharField(source="transaction.reference")
    usage_id = serializers.UUIDField(
        source="transaction.usage_id",
        allow_null=True,
        help_text="The usage record posted; null for a top-up.",
    )
    memo = serializers.CharField(source="transaction.memo")
    created_at = serializers.DateTimeField(source="transaction.created_at")

    class Meta:
        model = LedgerLine
        fields = (
            "id",
            "org",
            "account_kind",
            "currency",
            "amount",
            "transaction_id",
            "transaction_kind",
            "reference",
            "usage_id",
            "memo",
            "created_at",
        )
        read_only_fields = fields


TopupResponseSerializer = inline_serializer(
    "TopupResponse",
    {
        "transaction_id": serializers.UUIDField(),
        "reference": serializers.CharField(),
        "amount": money_field(),
        "account": AccountSerializer(),
    },
)


@extend_schema_view(
    list=extend_schema(summary="List accounts (an org key: its own)", parameters=[AccountQuerySerializer]),
    create=extend_schema(
        summary="Create an org's account (platform admin)",
        request=AccountCreateSerializer,
        responses={201: AccountSerializer, 409: CONFLICT},
    ),
    retrieve=extend_schema(summary="An org's accounts and balances", responses=OrgAccountsSerializer),
    partial_update=extend_schema(
        summary="Change an account's credit limit or freeze it (platform admin)",
        request=AccountUpdateSerializer,
        responses=AccountSerializer,
    ),
)
class AccountViewSet(SingleValuedQueryMixin, viewsets.GenericViewSet):
    serializer_class = AccountSerializer
    permission_classes = [IsAuthenticated, HasScope, RoleForAction]
    required_scopes = {"list": "read", "retrieve": "read", "lines": "read"}
    platform_admin_actions = ("create", "partial_update", "topup")
    staff_permissions = {
        "list": "accounting.view_account",
        "retrieve": "accounting.view_account",
        "lines": "accounting.view_account",
        "create": "accounting.add_account",
        "partial_update": "accounting.change_account",
        "topup": "accounting.change_account",
    }
    lookup_field = "org"
    lookup_value_regex = "[^/]+"

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        super().initial(request, *args, **kwargs)
        if "org" in kwargs:
            checked_org(kwargs["org"])

    def get_queryset(self) -> QuerySet[Account]:
        caller = caller_of(self.request)
        queryset = Account.objects.order_by("org", "kind")
        return queryset if caller.is_platform else queryset.filter(org=caller.userorgid)

    def list(self, request: Request) -> Response:
        query = AccountQuerySerializer(data=given_params(request))
        query.is_valid(raise_exception=True)
        queryset = self.get_queryset().filter(**query.validated_data)
        page = self.paginate_queryset(queryset)
        return self.get_paginated_response(AccountSerializer(page, many=True).data)

    def create(self, request: Request) -> Response:
        data = AccountCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            account = account_create(**data.validated_data)
        except AccountExists as exc:
            return Response({"detail": str(exc)}, status=status.HTTP_409_CONFLICT)
        except ValueError as exc:
            raise exceptions.ValidationError(field_errors(exc)) from None
        return Response(AccountSerializer(account).data, status=status.HTTP_201_CREATED)

    def retrieve(self, request: Request, org: str) -> Response:
        accounts = list(self.get_queryset().filter(org=org))
        if not accounts:
            raise Http404(f"No account of org {org!r}.")
        return Response({"org": org, "accounts": AccountSerializer(accounts, many=True).data})

    def partial_update(self, request: Request, org: str) -> Response:
        data = AccountUpdateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        params = dict(data.validated_data)
        account = self._account(org, params.pop("kind"))
        try:
            account = account_update(account=account, **params)
        except ValueError as exc:
            raise exceptions.ValidationError(field_errors(exc)) from None
        return Response(AccountSerializer(account).data)

    @extend_schema(
        summary="Top up an org's account (platform admin); idempotent on `reference`",
        request=TopupSerializer,
        responses={201: TopupResponseSerializer, 200: TopupResponseSerializer, 409: CONFLICT},
    )
    @action(detail=True, methods=["post"])
    def topup(self, request: Request, org: str) -> Response:
        data = TopupSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        params = data.validated_data
        account = self._account(org, params["kind"])
        try:
            txn, created = ledger_topup(
                org=account.org,
                kind=account.kind,
                amount=params["amount"],
                reference=params["reference"],
                memo=params["memo"],
                created_by=actor_of(request),
            )
        except LedgerError as exc:
            raise Http404(exc.message) from None
        except BalanceOverflow as exc:
            raise exceptions.ValidationError(field_errors(exc)) from None
        except ValueError as exc:
            return Response({"detail": str(exc), **field_errors(exc)}, status=status.HTTP_409_CONFLICT)
        account.refresh_from_db()
        body = {
            "transaction_id": txn.pk,
            "reference": txn.reference,
            "amount": str(txn.amount),
            "account": AccountSerializer(account).data,
        }
        return Response(body, status=status.HTTP_201_CREATED if created else status.HTTP_200_OK)

    @extend_schema(
        summary="An org's ledger lines, newest first",
        parameters=[
            OpenApiParameter("kind", enum=Account.Kind.values, description="Only this account kind.")
        ],
        responses=LedgerLineSerializer(many=True),
    )
    @action(detail=True, methods=["get"])
    def lines(self, request: Request, org: str) -> Response:
        accounts = self.get_queryset().filter(org=org)
        kind = given_params(request).get("kind")
        if kind is not None:
            if kind not in Account.Kind.values:
                raise exceptions.ValidationError(
                    {"kind": f"Must be one of {', '.join(Account.Kind.values)}."}
                )
            accounts = accounts.filter(kind=kind)
        account_ids = list(accounts.values_list("pk", flat=True))
        if not account_ids:
            raise Http404(f"No account of org {org!r}.")
        lines = (
            LedgerLine.objects.filter(account_id__in=account_ids)
            .select_related("account", "transaction")
            .order_by("-id")
        )
        page = self.paginate_queryset(lines)
        return self.get_paginated_response(LedgerLineSerializer(page, many=True).data)

    def _account(self, org: str, kind: str) -> Account:
        account = self.get_queryset().filter(org=org, kind=kind).first()
        if account is None:
            raise Http404(f"Org {org!r} has no {kind} account.")
        return account
