"""new-api's answers: a record as its log item, the quota in quota units, the envelope."""

import json
from typing import Any

from django.conf import settings
from django.db.models import F, QuerySet, Sum
from rest_framework.response import Response

from core.money import MONEY_PLACES
from llmlog.api.dialects.common import (
    QuotaUnits,
    gateway_number,
    quota_units,
    unix_seconds,
)
from llmlog.api.dialects.newapi.params import LOG_TYPE_CONSUME, TYPE_OF_STATUS
from llmlog.models import UsageStatus
from llmlog.queries import UsageQuery
from llmlog.replicas import replica_read
from llmlog.selectors.records import usage_page

# Only the columns an item shows: never the request/response bodies.
ITEM_COLUMNS = (
    "id",
    "seq",
    "transno",
    "userid",
    "username",
    "use_time",
    "status",
    "error_message",
    "token_id",
    "token_name",
    "model_name",
    "amount",
    "currency",
    "input_tokens",
    "output_tokens",
    "cached_tokens",
    "cache_creation_tokens",
    "reasoning_tokens",
    "total_tokens",
    "finish_seconds",
    "responsed_seconds",
    "is_stream",
    "channel_id",
    "provider",
    "group",
    "request_ip",
)


def log_item(row: dict[str, Any]) -> dict[str, Any]:
    """A record as new-api's log item."""
    failed = row["status"] == UsageStatus.FAILED
    amount = row["amount"]
    if failed:
        content = row["error_message"]
    else:
        charged = f"{amount} {row['currency']}" if amount is not None else "not priced yet"
        content = (
            f"{row['model_name']}: {row['input_tokens']} prompt + {row['output_tokens']} completion tokens, "
            f"{charged}"
        )
    other = {
        "request_id": row["transno"],
        "frt": None if row["responsed_seconds"] is None else round(row["responsed_seconds"] * 1000),
        "cache_tokens": row["cached_tokens"],
        "cache_creation_tokens": row["cache_creation_tokens"],
        "reasoning_tokens": row["reasoning_tokens"],
        "currency": row["currency"],
    }
    return {
        "id": row["seq"] or 0,  # null only on SQLite, between an insert and its trigger
        "user_id": gateway_number(row["userid"]),
        "created_at": unix_seconds(row["use_time"]),
        "type": TYPE_OF_STATUS.get(row["status"], LOG_TYPE_CONSUME),
        "content": content,
        "username": row["username"],
        "token_name": row["token_name"],
        "model_name": row["model_name"],
        "quota": quota_units(amount),
        "prompt_tokens": row["input_tokens"],
        "completion_tokens": row["output_tokens"],
        "use_time": round(row["finish_seconds"]) if row["finish_seconds"] is not None else 0,
        "is_stream": row["is_stream"],
        "channel_id": gateway_number(row["channel_id"]),
        "channel_name": row["provider"],
        "token_id": gateway_number(row["token_id"]),
        "group": row["group"],
        "ip": row["request_ip"] or "",
        "other": json.dumps(other, separators=(",", ":")),
    }


def exact_quota_of_sums() -> bool:
    """True when every amount is a whole number of quota units (the quota per unit is a multiple of
    10^MONEY_PLACES, as the default 500,000 is): then the quota of a sum is the sum of the quotas and
    the hourly rollups' amounts may answer /stat. Otherwise each record's rounding counts."""
    return settings.LLMLOG_NEWAPI_QUOTA_PER_UNIT % 10**MONEY_PLACES == 0


@replica_read  # on the records' database, the primary if that replica fails (llmlog.replicas)
def quota_sum(records: QuerySet) -> int:
    """The sum of the records' quotas, each rounded on its own (quota_units), summed in the database."""
    total = records.order_by().aggregate(quota=Sum(QuotaUnits(F("amount"))))["quota"]
    return int(total or 0)


def newest_items(query: UsageQuery, limit: int, offset: int = 0) -> list[dict[str, Any]]:
    rows = usage_page(query=query, offset=offset, limit=limit, columns=ITEM_COLUMNS)
    return [log_item(row) for row in rows]


def ok(data: Any) -> Response:
    return Response({"success": True, "message": "", "data": data})
