"""Builders for usage records in tests that need rows in a given shape (admin, dashboard, CSV, e2e)."""

import itertools
from datetime import datetime
from decimal import Decimal
from typing import Any

from django.utils import timezone

from llmlog.models import LLMUsage, LLMUsageHistory, UsageRecord

_numbers = itertools.count(1)


def make_usage(*, model: type[UsageRecord] = LLMUsage, **overrides: Any) -> UsageRecord:
    """One saved record (LLMUsage by default, or LLMUsageHistory): acme's gpt-4o call of 100 + 50
    tokens for 0.01 (cost 0.008), now, pending (history: accounted); any field can be overridden.
    use_date follows use_time in the current time zone, total_tokens the token counts, unless given."""
    number = next(_numbers)
    use_time: datetime = overrides.pop("use_time", None) or timezone.now()
    fields: dict[str, Any] = {
        "transno": f"t-{number:06d}",
        "use_time": use_time,
        "use_date": timezone.localdate(use_time),
        "userid": "u-1",
        "username": "Ada",
        "userorgid": "acme",
        "token_name": "ada key",
        "model_name": "gpt-4o",
        "llmid": "gpt-4o",
        "ownerid": "openai",
        "input_tokens": 100,
        "output_tokens": 50,
        "amount": Decimal("0.01000"),
        "cost": Decimal("0.00800"),
        "status": "success",
        "code": 200,
        "accounting_status": "pending",
    }
    if model is LLMUsageHistory:  # history holds accounted records only
        fields.update(accounting_status="accounted", backup_time=timezone.now())
    fields.update(overrides)
    fields.setdefault("total_tokens", fields["input_tokens"] + fields["output_tokens"])
    return model.objects.create(**fields)
