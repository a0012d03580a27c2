"""Builders for the query tests: usage records straight into the tables, and the nightly move by hand."""

import json
from datetime import UTC, datetime
from decimal import Decimal
from itertools import count
from typing import Any

from django.utils import timezone

from llmlog.ingest.service import usage_ingest
from llmlog.models import LLMUsage, LLMUsageHistory

_numbers = count()


def make_usage(**overrides: Any) -> LLMUsage:
    """One saved llmusage record; tokens follow the convention (total = input + output)."""
    n = next(_numbers)
    use_time = overrides.pop("use_time", datetime(2026, 11, 20, 10, 15, tzinfo=UTC))
    values: dict[str, Any] = {
        "transno": f"q-{n:06d}",
        "use_time": use_time,
        "use_date": timezone.localtime(use_time).date(),
        "userid": "u-1",
        "username": "Ada",
        "userorgid": "acme",
        "token_name": "ada key",
        "model_name": "gpt-4o",
        "llmid": "gpt-4o",
        "ownerid": "openai",
        "input_tokens": 1000,
        "output_tokens": 200,
        "cached_tokens": 100,
        "amount": Decimal("0.01000"),
        "cost": Decimal("0.00800"),
        "accounting_status": "accounted",
    }
    values.update(overrides)
    values.setdefault("total_tokens", values["input_tokens"] + values["output_tokens"])
    return LLMUsage.objects.create(**values)


def ingest(*records: dict) -> list[str]:
    """Records through the ingest service, each of which must be created; their ids."""
    result = usage_ingest(body=json.dumps(list(records)).encode())
    assert [item.status for item in result.items] == ["created"] * len(records), result.items
    return [item.id for item in result.items]


def move_to_history(*records: LLMUsage | str) -> None:
    """What the nightly backup does: the same id and fields in llmusage_history, gone from llmusage.
    Records or their ids."""
    for record in records:
        if not isinstance(record, LLMUsage):
            record = LLMUsage.objects.get(pk=record)
        values = {f.attname: getattr(record, f.attname) for f in LLMUsage._meta.concrete_fields}
        LLMUsageHistory.objects.create(**values, backup_time=timezone.now())
        LLMUsage.objects.filter(pk=record.pk).delete()
