"""Output shapes. Ingest validates with msgspec (llmlog.ingest); these only shape what is read."""

from collections.abc import Mapping
from datetime import date, datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

from django.db.models import Model
from django.utils import timezone
from rest_framework import serializers

from llmlog.models import LLMUsage, LLMUsageHistory, UsageAll

HIDDEN_FIELDS = ("payload_hash",)
# Every usage column a client sees, in table order; history and the read model add theirs at the end.
REPRESENTED_FIELDS = tuple(
    f.attname for f in UsageAll._meta.concrete_fields if f.attname not in HIDDEN_FIELDS
)


def _json_value(value: Any) -> Any:
    if isinstance(value, datetime):
        text = timezone.localtime(value).isoformat()
        return text[:-6] + "Z" if text.endswith("+00:00") else text
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Decimal | UUID):
        return str(value)  # money as a string, never a float
    return value


def usage_representation(record: Mapping[str, Any] | Model) -> dict[str, Any]:
    """A usage record (model instance or ingest row) as the API shows it; one shape for every endpoint.

    A plain function rather than ModelSerializer fields: DRF rebuilds those from the model on every
    request, which costs more than the whole single-record ingest.
    """
    get = (
        record.get
        if isinstance(record, Mapping)
        else lambda name, default=None: getattr(record, name, default)
    )
    out = {}
    for name in REPRESENTED_FIELDS:
        value = get(name, _MISSING)
        if value is not _MISSING:
            out[name] = _json_value(value)
    return out


_MISSING = object()


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


class IngestItemSerializer(serializers.Serializer):
    index = serializers.IntegerField()
    status = serializers.ChoiceField(["created", "duplicate", "conflict", "error"])
    transno = serializers.CharField(required=False)
    id = serializers.UUIDField(required=False)
    errors = serializers.DictField(child=serializers.CharField(), required=False)


class BulkIngestResponseSerializer(serializers.Serializer):
    created = serializers.IntegerField()
    duplicates = serializers.IntegerField()
    conflicts = serializers.IntegerField()
    errors = serializers.IntegerField()
    items = IngestItemSerializer(many=True)
