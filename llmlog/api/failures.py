"""Failed postings (`/api/accounting-failures/`), their retry and resolution: thin views over
`accounting.failures` and `llmlog.posting`. Who may do what: llmlog/api/accounting.py."""

from typing import Any

from django.db.models import QuerySet
from drf_spectacular.utils import extend_schema, extend_schema_view, inline_serializer
from rest_framework import exceptions, filters, mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response

from accounting.failures import (
    FailureStateError,
    failure_ignore,
    failure_resolve,
    get_failed_accounting_records,
)
from accounting.models import AccountingFailure
from llmlog.api.access import CONFLICT, RoleForAction, given_params
from llmlog.api.auth import HasScope, actor_of, caller_of
from llmlog.api.errors import SingleValuedQueryMixin
from llmlog.posting import retry_failed_accounting

MAX_RETRY_IDS = 1000
# Failure ids are 64-bit: a larger number names no failure (and SQLite cannot even compare with it).
MAX_FAILURE_ID = 2**63 - 1


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


class StrictOrderingFilter(filters.OrderingFilter):
    """DRF's `ordering`, with a field it does not sort by refused (a 400 naming the choices) where DRF
    drops it silently and answers in the default order, which a client cannot tell from its own."""

    def get_ordering(self, request: Request, queryset: QuerySet, view: Any) -> Any:
        given = request.query_params.get(self.ordering_param)
        if given:
            allowed = {name for name, _ in self.get_valid_fields(queryset, view, {"request": request})}
            for term in (part.strip() for part in given.split(",")):
                if term.removeprefix("-") not in allowed:
                    choices = ", ".join(sorted(allowed))
                    problem = f"{term!r} is not one of: {choices} (a leading - sorts descending)."
                    raise exceptions.ValidationError({self.ordering_param: [problem]})
        return super().get_ordering(request, queryset, view)


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
    filter_backends = [StrictOrderingFilter]
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
