"""`seq`: the sequential number every usage record gets at ingest (migration 0008), kept when the record
moves to history, unique across both tables; the integer id of the new-api and AI Proxy dialects."""

import json
import uuid
from datetime import timedelta

import pytest
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from llmlog.backup import backup_accounted_llmusage
from llmlog.ingest.service import usage_ingest
from llmlog.models import LLMUsage, LLMUsageHistory, UsageAll
from tests.factories import usage_payload

pytestmark = pytest.mark.django_db


def ingest(records: list[dict]) -> list[str]:
    result = usage_ingest(body=json.dumps(records).encode())
    assert [item.status for item in result.items] == ["created"] * len(records), result.items
    return [str(item.id) for item in result.items]


def seqs(ids: list[str]) -> list[int]:
    found = dict(UsageAll.objects.filter(id__in=ids).values_list("id", "seq"))
    return [found[uuid.UUID(i)] for i in ids]


def test_a_single_ingested_record_gets_a_number():
    [record_id] = ingest([usage_payload(transno="seq-one")])
    [number] = seqs([record_id])
    assert isinstance(number, int) and number > 0


def test_numbers_increase_in_ingest_order_one_request_after_another():
    first = ingest([usage_payload(transno="seq-a")])
    second = ingest([usage_payload(transno="seq-b")])
    assert seqs(first)[0] < seqs(second)[0]


@pytest.mark.parametrize("size", [3, 40])  # 40: past ingest's small-write limit, COPY on PostgreSQL
def test_a_bulk_request_numbers_every_record_once(size):
    ids = ingest([usage_payload(transno=f"seq-bulk-{size}-{i}") for i in range(size)])
    numbers = seqs(ids)
    assert None not in numbers
    assert len(set(numbers)) == size
    assert sorted(numbers) == numbers  # in the request's order


def test_a_record_keeps_its_number_when_it_moves_to_history():
    yesterday = timezone.now() - timedelta(days=2)
    ids = ingest([usage_payload(transno=f"seq-move-{i}", use_time=yesterday.isoformat()) for i in range(3)])
    before = seqs(ids)
    LLMUsage.objects.filter(id__in=ids).update(accounting_status="accounted")
    backup_accounted_llmusage()
    assert LLMUsageHistory.objects.filter(id__in=ids).count() == 3
    assert dict(LLMUsageHistory.objects.filter(id__in=ids).values_list("id", "seq")) == dict(
        zip(map(uuid.UUID, ids), before, strict=True)
    )
    # A record ingested after the move takes a new number, never one that history holds.
    [later] = ingest([usage_payload(transno="seq-after-move")])
    assert seqs([later])[0] > max(before)


def test_numbers_are_unique_across_both_tables():
    old = timezone.now() - timedelta(days=3)
    ids = ingest([usage_payload(transno=f"seq-u-{i}", use_time=old.isoformat()) for i in range(4)])
    LLMUsage.objects.filter(id__in=ids[:2]).update(accounting_status="accounted")
    backup_accounted_llmusage()
    ingest([usage_payload(transno=f"seq-u-late-{i}") for i in range(3)])
    numbers = list(UsageAll.objects.values_list("seq", flat=True))
    assert len(numbers) == 7 and None not in numbers
    assert len(set(numbers)) == len(numbers)


def test_the_hot_table_refuses_a_number_twice():
    [record_id] = ingest([usage_payload(transno="seq-dup-1")])
    [other_id] = ingest([usage_payload(transno="seq-dup-2")])
    with pytest.raises(IntegrityError), transaction.atomic():
        LLMUsage.objects.filter(id=other_id).update(seq=seqs([record_id])[0])


def test_the_number_is_indexed_on_both_tables():
    with connection.cursor() as cursor:
        for table, index in (
            ("llmusage", "llmusage_seq_unique"),
            ("llmusage_history", "llmusage_hist_seq_idx"),
        ):
            constraints = connection.introspection.get_constraints(cursor, table)
            assert constraints[index]["columns"] == ["seq"]
            assert constraints[index]["unique"] == (table == "llmusage")
