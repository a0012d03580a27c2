"""Output shapes. Ingest validates with msgspec (llmlog.ingest); these only shape what is read."""

from rest_framework import serializers

from llmlog.models import LLMUsage, LLMUsageHistory

HIDDEN_FIELDS = ("payload_hash",)


class LLMUsageSerializer(serializers.ModelSerializer):
    class Meta:
        model = LLMUsage
        exclude = HIDDEN_FIELDS
        read_only_fields = [f.name for f in LLMUsage._meta.concrete_fields]


class LLMUsageHistorySerializer(serializers.ModelSerializer):
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
