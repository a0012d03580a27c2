from datetime import UTC, date, datetime

import pytest
from django.db import IntegrityError, transaction

from llmlog.models import LLMUsage, LLMUsageHistory, UsageAll

pytestmark = pytest.mark.django_db


def usage(**overrides) -> LLMUsage:
    values = {
        "transno": "m-1",
        "use_date": date(2026, 11, 20),
        "use_time": datetime(2026, 11, 20, 10, tzinfo=UTC),
        "model_name": "gpt-4o",
        "input_tokens": 100,
        "output_tokens": 20,
        "total_tokens": 120,
    }
    values.update(overrides)
    return LLMUsage(**values)


def test_transno_is_unique():
    usage().save()
    with pytest.raises(IntegrityError), transaction.atomic():
        usage().save()


@pytest.mark.parametrize(
    "overrides",
    [
        {"cached_tokens": 90, "cache_creation_tokens": 20},  # parts of the prompt above the prompt
        {"reasoning_tokens": 21},
        {"total_tokens": 121},
        {"amount": -1},
        {"cost": -1},
    ],
)
def test_database_refuses_records_that_break_the_token_convention(overrides):
    with pytest.raises(IntegrityError), transaction.atomic():
        usage(**overrides).save()


def test_ids_are_time_ordered_uuid7():
    first, second = usage(transno="a"), usage(transno="b")

    assert first.id.version == 7
    assert first.id < second.id


def test_history_has_every_usage_field_plus_backup_time():
    usage_fields = {f.name for f in LLMUsage._meta.concrete_fields}
    history_fields = {f.name for f in LLMUsageHistory._meta.concrete_fields}

    assert history_fields - usage_fields == {"backup_time"}
    assert LLMUsage._meta.db_table == "llmusage"
    assert LLMUsageHistory._meta.db_table == "llmusage_history"


def test_history_transno_is_unique_too():
    values = {f.attname: getattr(usage(), f.attname) for f in LLMUsage._meta.concrete_fields}
    LLMUsageHistory.objects.create(**values, backup_time=datetime.now(UTC))
    values["id"] = usage().id
    with pytest.raises(IntegrityError), transaction.atomic():
        LLMUsageHistory.objects.create(**values, backup_time=datetime.now(UTC))


def test_usage_all_reads_hot_and_history_alike():
    usage(transno="hot-1").save()
    moved = usage(transno="hist-1")
    values = {f.attname: getattr(moved, f.attname) for f in LLMUsage._meta.concrete_fields}
    LLMUsageHistory.objects.create(**values, backup_time=datetime.now(UTC))

    rows = dict(UsageAll.objects.values_list("transno", "source"))

    assert rows == {"hot-1": "hot", "hist-1": "history"}
    assert UsageAll.objects.get(transno="hist-1").id == moved.id
    assert UsageAll.objects.get(transno="hot-1").backup_time is None
