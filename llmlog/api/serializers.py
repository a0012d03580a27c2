"""Output shapes. Ingest validates with msgspec (llmlog.ingest); these only shape what is read."""

import json
from collections.abc import Mapping
from datetime import date, datetime, tzinfo
from typing import Any

from django.conf import settings
from django.db.models import Model
from django.utils import timezone
from rest_framework import serializers

from core.money import MONEY_DIGITS, MONEY_PLACES
from llmlog.ingest.rules import json_problem
from llmlog.ingest.stated import money_text_problem
from llmlog.limits import MAX_MONEY
from llmlog.models import LLMUsage, LLMUsageHistory, UsageAll, UsageStatus

HIDDEN_FIELDS = ("payload_hash",)
# Every usage column a client sees, in table order; history and the read model add theirs at the end.
REPRESENTED_FIELDS = tuple(
    f.attname for f in UsageAll._meta.concrete_fields if f.attname not in HIDDEN_FIELDS
)


def _datetime_text(value: datetime, tz: tzinfo) -> str:
    text = value.astimezone(tz).isoformat()  # timezone.localtime, with the zone looked up once a record
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def _date_text(value: date, tz: tzinfo) -> str:
    return value.isoformat()


def _text(value: Any, tz: tzinfo) -> str:
    return str(value)  # money as a string, never a float; UUIDs


def _formatter(field) -> Any:
    """How a column's value becomes JSON, as format(value, current time zone): decided once per field,
    not per value (a page of records formats a thousand values)."""
    return {
        "DateTimeField": _datetime_text,
        "DateField": _date_text,
        "DecimalField": _text,
        "UUIDField": _text,
    }.get(field.get_internal_type())


_MISSING = object()
# (attname, formatter or None) for every usage column a client sees, in table order.
_REPRESENTATION = tuple(
    (field.attname, _formatter(field))
    for field in UsageAll._meta.concrete_fields
    if field.attname in REPRESENTED_FIELDS
)


def usage_representation(record: Mapping[str, Any] | Model) -> dict[str, Any]:
    """A usage record (model instance or ingest row) as the API shows it; one shape for every endpoint.

    A plain function rather than ModelSerializer fields: DRF rebuilds those from the model on every
    request, which costs more than the whole single-record ingest. A field the record lacks (a hot
    record has no backup_time) is left out.
    """
    get = record.get if isinstance(record, Mapping) else record.__dict__.get
    tz = timezone.get_current_timezone()
    out = {}
    for name, format_value in _REPRESENTATION:
        value = get(name, _MISSING)
        if value is _MISSING:
            continue
        out[name] = value if value is None or format_value is None else format_value(value, tz)
    return out


class UsageRepresentationMixin:
    def to_representation(self, instance) -> dict[str, Any]:
        return usage_representation(instance)


class LLMUsageSerializer(UsageRepresentationMixin, serializers.ModelSerializer):
    class Meta:
        model = LLMUsage
        exclude = HIDDEN_FIELDS
        read_only_fields = [f.name for f in LLMUsage._meta.concrete_fields]


class LLMUsageHistorySerializer(UsageRepresentationMixin, serializers.ModelSerializer):
    class Meta:
        model = LLMUsageHistory
        exclude = HIDDEN_FIELDS
        read_only_fields = [f.name for f in LLMUsageHistory._meta.concrete_fields]


class StrictTextMixin:
    """Text fields that take text as sent: DRF's CharField turns 0 or true into "0" or "True", and trims
    white space before checking the length, where the schema (and a client reading its error) says the
    field is a string of at most that length. Ingest keeps text as sent too."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("trim_whitespace", False)
        super().__init__(*args, **kwargs)

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictCharField(StrictTextMixin, serializers.CharField):
    pass


class StrictRegexField(StrictTextMixin, serializers.RegexField):
    pass


class IngestItemSerializer(serializers.Serializer):
    index = serializers.IntegerField()
    status = serializers.ChoiceField(["created", "duplicate", "conflict", "error"])
    transno = serializers.CharField(required=False)
    id = serializers.UUIDField(required=False)
    errors = serializers.DictField(child=serializers.CharField(), required=False)


class BulkIngestResponseSerializer(serializers.Serializer):
    received = serializers.IntegerField(help_text="Records in the request.")
    created = serializers.IntegerField()
    duplicates = serializers.IntegerField()
    conflicts = serializers.IntegerField()
    errors = serializers.IntegerField()
    errors_not_listed = serializers.IntegerField(
        help_text="Items in error or conflict past the first 100, counted but not listed in `items`."
    )
    items = IngestItemSerializer(
        many=True,
        help_text="Each created or duplicate record, and the first 100 in error or conflict, by `index`.",
    )


class UsageAllSerializer(UsageRepresentationMixin, serializers.ModelSerializer):
    """A usage record wherever it lives: `source` is hot or history, `backup_time` when it moved."""

    class Meta:
        model = UsageAll
        exclude = HIDDEN_FIELDS
        read_only_fields = [f.name for f in UsageAll._meta.concrete_fields]


def money_field(**kwargs: Any) -> serializers.DecimalField:
    """A ledger amount (a top-up, a credit limit, a budget): the ledger's digits and places."""
    return serializers.DecimalField(max_digits=MONEY_DIGITS, decimal_places=MONEY_PLACES, **kwargs)


class MoneyField(serializers.DecimalField):
    """A per-record money value under ingest's rules: a string of ASCII digits with at most one point or
    an unsigned number (DRF alone would read " 1", "1_0", "1e3" and other scripts' digits), at most
    MAX_MONEY."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(
            max_digits=MONEY_DIGITS, decimal_places=MONEY_PLACES, min_value=0, max_value=MAX_MONEY, **kwargs
        )

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, str | int | float) and not isinstance(data, bool):
            problem = money_text_problem(json.dumps(data).encode())
            if problem:
                raise serializers.ValidationError(problem)
        return super().to_internal_value(data)


class UsagePatchSerializer(serializers.Serializer):
    """What an operator may correct on a record not yet accounted. Token counts are not editable: they
    are what the provider reported, and amount/cost were derived from them."""

    amount = MoneyField()
    cost = MoneyField()
    model_name = StrictCharField(max_length=150, min_length=1)
    llmid = StrictCharField(max_length=64, allow_blank=True)
    ownerid = StrictCharField(max_length=64, allow_blank=True)
    userid = StrictCharField(max_length=64, allow_blank=True)
    username = StrictCharField(max_length=150, allow_blank=True)
    token_name = StrictCharField(max_length=150, allow_blank=True)
    group = StrictCharField(max_length=64, allow_blank=True)
    feature = StrictCharField(max_length=64, allow_blank=True)
    status = serializers.ChoiceField(UsageStatus.choices)
    code = serializers.IntegerField(allow_null=True, min_value=0, max_value=999)
    error_message = StrictCharField(allow_blank=True)
    metadata = serializers.DictField()

    def validate_metadata(self, value: dict) -> dict:
        """The bounds ingest holds metadata to: size, depth, and no NUL (PostgreSQL's jsonb refuses it)."""
        limit = settings.LLMLOG_METADATA_MAX_BYTES
        if len(json.dumps(value, ensure_ascii=False).encode()) > limit:
            raise serializers.ValidationError(f"At most {limit} bytes of JSON.")
        problem = json_problem(value)
        if problem:
            raise serializers.ValidationError(problem)
        return value

    def validate(self, attrs: dict) -> dict:
        unknown = sorted(set(self.initial_data) - set(self.fields))
        if unknown:
            raise serializers.ValidationError(
                {name: ["Not a field that can be changed."] for name in unknown}
            )
        if not attrs:
            raise serializers.ValidationError({"non_field_errors": ["No field to change."]})
        return attrs


class UsageCountSerializer(serializers.Serializer):
    count = serializers.IntegerField()
    estimated = serializers.BooleanField(help_text="True: the planner's estimate of an unfiltered table.")


class UsageSumsSerializer(serializers.Serializer):
    requests = serializers.IntegerField()
    input_tokens = serializers.IntegerField()
    output_tokens = serializers.IntegerField()
    cached_tokens = serializers.IntegerField()
    cache_creation_tokens = serializers.IntegerField()
    reasoning_tokens = serializers.IntegerField()
    image_input_tokens = serializers.IntegerField()
    web_search_count = serializers.IntegerField()
    total_tokens = serializers.IntegerField()
    amount = serializers.DecimalField(max_digits=MONEY_DIGITS + 6, decimal_places=MONEY_PLACES)
    cost = serializers.DecimalField(max_digits=MONEY_DIGITS + 6, decimal_places=MONEY_PLACES)


class UsageModelSumsSerializer(UsageSumsSerializer):
    model_name = serializers.CharField()


class UsageDaySumsSerializer(UsageSumsSerializer):
    day = serializers.DateField(help_text="Day in TIME_ZONE.")


class UsageRatesSerializer(serializers.Serializer):
    rpm = serializers.IntegerField(help_text="Requests started in the last 60 seconds.")
    tpm = serializers.IntegerField(help_text="Total tokens of the requests started in the last 60 seconds.")


class UsageStatsSerializer(UsageSumsSerializer):
    rpm = serializers.IntegerField(help_text="Requests started in the last 60 seconds.")
    tpm = serializers.IntegerField(help_text="Total tokens of the requests started in the last 60 seconds.")
    by_model = UsageModelSumsSerializer(many=True)
    by_day = UsageDaySumsSerializer(many=True)
    adjustments = serializers.DecimalField(
        max_digits=MONEY_DIGITS + 6,
        decimal_places=MONEY_PLACES,
        help_text="What applied re-pricings adjusted these records' amount by (ledger adjustments; the "
        "records keep their amount).",
    )
    net_amount = serializers.DecimalField(
        max_digits=MONEY_DIGITS + 6,
        decimal_places=MONEY_PLACES,
        help_text="amount + adjustments: what these records were charged in the end.",
    )
