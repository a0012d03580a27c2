"""The accounting API: accounts, their ledger lines and top-ups; failed postings, their retry and resolution.

Thin views over `accounting.ledger`, `accounting.failures` and `llmlog.posting` (retrying reads usage
rows, which is why these views live on llmlog's side: `accounting` never imports llmlog).

Who may do what:
- read (`read` scope): an org key sees its own org's accounts, lines and failures (another org's is a
  404); a platform key or a staff session sees every org.
- create an account, change it, top it up, resolve or ignore a failure: a platform admin (a platform
  key with role admin or owner).
- retry a failure: a platform admin, or an org key with role admin or owner for its own org's failures
  (retrying only posts what the record says; it never writes anything off).
- a staff session: what its Django permissions allow (`staff_permissions` of each viewset): view to
  read, add to create an account, change to change one, top it up, retry, resolve or ignore a failure.
"""

from typing import Any

from django.db.models import QuerySet
from django.http import Http404
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    extend_schema_view,
    inline_serializer,
)
from rest_framework import exceptions, filters, mixins, permissions, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.routers import SimpleRouter

from accounting.failures import (
    FailureStateError,
    failure_ignore,
    failure_resolve,
    get_failed_accounting_records,
)
from accounting.ledger import (
    AccountExists,
    BalanceOverflow,
    LedgerError,
    account_create,
    account_update,
    ledger_topup,
)
from accounting.models import Account, AccountingFailure, LedgerLine
from core.money import MONEY_DIGITS, MONEY_PLACES
from llmlog.api.auth import ADMIN_ROLES, Caller, HasScope, actor_of, caller_of
from llmlog.api.errors import SingleValuedQueryMixin
from llmlog.api.serializers import StrictCharField, StrictRegexField
from llmlog.posting import retry_failed_accounting

CONFLICT = OpenApiResponse(
    {"type": "object", "properties": {"detail": {"type": "string"}}, "additionalProperties": True},
    "It exists already (an account), or the same reference was used for another amount (a top-up), "
    "or the failure is resolved (ignore).",
)
MAX_RETRY_IDS = 1000
# Failure ids are 64-bit: a larger number names no failure (and SQLite cannot even compare with it).
MAX_FAILURE_ID = 2**63 - 1


# An org is at most 64 characters of text that PostgreSQL can hold (no NUL, no lone surrogate).
MAX_ORG_LENGTH = 64


def is_platform_admin(caller: Caller) -> bool:
    return caller.is_platform_admin


def checked_org(org: str) -> str:
    """The `{org}` of a path, or a 400 naming it: a NUL or a lone surrogate would reach the database as
    an error (a 500), and no org is longer than the column."""
    if "\x00" in org:
        raise exceptions.ValidationError({"org": "Must not contain NUL characters."})
    try:
        org.encode()
    except UnicodeEncodeError:
        raise exceptions.ValidationError({"org": "Must be valid UTF-8 text."}) from None
    if len(org) > MAX_ORG_LENGTH:
        raise exceptions.ValidationError({"org": f"At most {MAX_ORG_LENGTH} characters."})
    return org


class RoleForAction(permissions.BasePermission):
    """`platform_admin_actions` need a platform admin; `org_admin_actions` an admin or owner key."""

    def has_permission(self, request, view) -> bool:
        caller = caller_of(request)
        action_name = getattr(view, "action", None)
        if action_name in getattr(view, "platform_admin_actions", ()):
            self.message = "Only a platform admin (a platform key with role admin or owner) may do this."
            return is_platform_admin(caller)
        if action_name in getattr(view, "org_admin_actions", ()):
            self.message = "Only a key with role admin or owner may do this."
            return caller.role in ADMIN_ROLES
        return True


def given_params(request: Request) -> dict[str, str]:
    """The query parameters sent with a value: an empty one is one not sent, as everywhere in the API."""
    return {name: value for name, value in request.query_params.items() if value != ""}


def _field_errors(exc: ValueError) -> dict[str, str]:
    """The services say 'field: message'; the API answers {field: message}."""
    name, sep, message = str(exc).partition(": ")
    return {name: message} if sep and name.isidentifier() else {"non_field_errors": str(exc)}


def _money_field(**kwargs: Any) -> serializers.DecimalField:
    return serializers.DecimalField(max_digits=MONEY_DIGITS, decimal_places=MONEY_PLACES, **kwargs)


# --- accounts -------------------------------------------------------------------------------------


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
    credit_limit = _money_field(min_value=0, default=0)
    status = serializers.ChoiceField(choices=Account.Status.choices, default=Account.Status.ACTIVE)


class AccountUpdateSerializer(serializers.Serializer):
    kind = serializers.ChoiceField(choices=Account.CREATABLE_KIND_CHOICES, default="customer")
    credit_limit = _money_field(min_value=0, required=False)
    status = serializers.ChoiceField(choices=Account.Status.choices, required=False)

    def validate(self, attrs: dict) -> dict:
        if "credit_limit" not in attrs and "status" not in attrs:
            raise serializers.ValidationError({"credit_limit": "Send credit_limit, status, or both."})
        return attrs


class AccountQuerySerializer(serializers.Serializer):
    org = serializers.CharField(max_length=64, required=False)
    kind = serializers.ChoiceField(choices=Account.Kind.choices, required=False)
    status = serializers.ChoiceField(choices=Account.Status.choices, required=False)
    currency = serializers.CharField(max_length=3, required=False)


class TopupSerializer(serializers.Serializer):
    amount = _money_field()
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
        "amount": _money_field(),
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
            raise exceptions.ValidationError(_field_errors(exc)) from None
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
        return Response(AccountSerializer(account_update(account=account, **params)).data)

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
            raise exceptions.ValidationError(_field_errors(exc)) from None
        except ValueError as exc:
            return Response({"detail": str(exc), **_field_errors(exc)}, status=status.HTTP_409_CONFLICT)
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


# --- failed postings ------------------------------------------------------------------------------


class AccountingFailureSerializer(serializers.ModelSerializer):
    class Meta:
        model = AccountingFailure
        fields = "__all__"
        read_only_fields = [f.name for f in AccountingFailure._meta.concrete_fields]


class FailureQuerySerializer(serializers.Serializer):
    """The filters of get_failed_accounting_records; the dates bound use_date, both inclusive."""

    start_date = serializers.DateField(required=False)
    end_date = serializers.DateField(required=False)
    userorgid = serializers.CharField(max_length=64, required=False)
    userid = serializers.CharField(max_length=64, required=False)
    llmid = serializers.CharField(max_length=64, required=False)
    model_name = serializers.CharField(max_length=150, required=False)
    error_code = serializers.ChoiceField(choices=AccountingFailure.ErrorCode.choices, required=False)
    status = serializers.ChoiceField(choices=AccountingFailure.Status.choices, required=False)
    transno = serializers.CharField(max_length=128, required=False)

    def validate(self, attrs: dict) -> dict:
        start, end = attrs.get("start_date"), attrs.get("end_date")
        if start and end and end < start:
            raise serializers.ValidationError({"end_date": "Must not be before start_date."})
        return attrs


class RetryManySerializer(serializers.Serializer):
    ids = serializers.ListField(
        child=serializers.IntegerField(min_value=1, max_value=MAX_FAILURE_ID),
        min_length=1,
        max_length=MAX_RETRY_IDS,
    )


RETRY_OUTCOMES = ["accounted", "skipped", "failed", "already_accounted", "busy", "missing"]
RetryResponseSerializer = inline_serializer(
    "RetryResponse",
    {"result": serializers.ChoiceField(RETRY_OUTCOMES), "failure": AccountingFailureSerializer()},
)
RetryManyResponseSerializer = inline_serializer(
    "RetryManyResponse",
    {
        "counts": serializers.DictField(child=serializers.IntegerField()),
        "results": serializers.DictField(child=serializers.ChoiceField([*RETRY_OUTCOMES, "not_found"])),
    },
)


@extend_schema_view(
    list=extend_schema(
        summary="Search failed postings (an org key: its own org's)", parameters=[FailureQuerySerializer]
    ),
    retrieve=extend_schema(summary="One failed posting"),
)
class AccountingFailureViewSet(
    SingleValuedQueryMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet
):
    serializer_class = AccountingFailureSerializer
    permission_classes = [IsAuthenticated, HasScope, RoleForAction]
    required_scopes = {"list": "read", "retrieve": "read"}
    platform_admin_actions = ("resolve", "ignore")
    org_admin_actions = ("retry", "retry_many")
    staff_permissions = {
        "list": "accounting.view_accountingfailure",
        "retrieve": "accounting.view_accountingfailure",
        "retry": "accounting.change_accountingfailure",
        "retry_many": "accounting.change_accountingfailure",
        "resolve": "accounting.change_accountingfailure",
        "ignore": "accounting.change_accountingfailure",
    }
    lookup_value_regex = "[^/]+"
    filter_backends = [filters.OrderingFilter]
    ordering_fields = ["last_failed_at", "first_failed_at", "use_date", "attempts", "amount", "next_retry_at"]

    def get_queryset(self) -> QuerySet[AccountingFailure]:
        params: dict[str, Any] = {}
        if self.action == "list":
            query = FailureQuerySerializer(data=given_params(self.request))
            query.is_valid(raise_exception=True)
            params = query.validated_data
        queryset = get_failed_accounting_records(**params)
        caller = caller_of(self.request)
        return queryset if caller.is_platform else queryset.filter(userorgid=caller.userorgid)

    def get_object(self) -> AccountingFailure:
        lookup = str(self.kwargs["pk"])
        if not (lookup.isascii() and lookup.isdigit()) or int(lookup) > MAX_FAILURE_ID:
            raise exceptions.ValidationError({"id": f"{lookup!r} is not a failure id (an integer)."})
        return super().get_object()

    @extend_schema(summary="Retry posting this record now", request=None, responses=RetryResponseSerializer)
    @action(detail=True, methods=["post"])
    def retry(self, request: Request, pk: str) -> Response:
        failure = self.get_object()
        result = retry_failed_accounting(ids=[failure.pk], by=actor_of(request))
        failure.refresh_from_db()
        return Response({"result": result.outcomes[failure.pk], "failure": self.get_serializer(failure).data})

    @extend_schema(
        operation_id="api_accounting_failures_retry_many",
        summary="Retry many failures now",
        request=RetryManySerializer,
        responses=RetryManyResponseSerializer,
    )
    @action(detail=False, methods=["post"], url_path="retry")
    def retry_many(self, request: Request) -> Response:
        data = RetryManySerializer(data=request.data)
        data.is_valid(raise_exception=True)
        wanted = list(dict.fromkeys(data.validated_data["ids"]))
        visible = set(self.get_queryset().filter(pk__in=wanted).values_list("pk", flat=True))
        result = retry_failed_accounting(ids=[pk for pk in wanted if pk in visible], by=actor_of(request))
        results = {str(pk): result.outcomes.get(pk, "not_found") for pk in wanted}
        return Response({"counts": result.counts, "results": results})

    @extend_schema(
        summary="Mark settled outside the ledger (platform admin)",
        request=None,
        responses=AccountingFailureSerializer,
    )
    @action(detail=True, methods=["post"])
    def resolve(self, request: Request, pk: str) -> Response:
        failure = failure_resolve(failure=self.get_object(), by=actor_of(request))
        return Response(self.get_serializer(failure).data)

    @extend_schema(
        summary="Never post it; the scheduled retry leaves it alone (platform admin)",
        request=None,
        responses={200: AccountingFailureSerializer, 409: CONFLICT},
    )
    @action(detail=True, methods=["post"])
    def ignore(self, request: Request, pk: str) -> Response:
        try:
            failure = failure_ignore(failure=self.get_object(), by=actor_of(request))
        except FailureStateError as exc:
            return Response({"detail": str(exc)}, status=status.HTTP_409_CONFLICT)
        return Response(self.get_serializer(failure).data)


# Both `/retry` and `/retry/` (and so on): the design's paths have no trailing slash, and a POST
# redirected to add one would lose its body.
router = SimpleRouter()
router.trailing_slash = "/?"  # DRF's constructor only takes True/False; the regex is what it builds with
router.register("accounts", AccountViewSet, basename="account")
router.register("accounting-failures", AccountingFailureViewSet, basename="accounting-failure")

urlpatterns = router.urls
