"""Builders for ledger and posting tests: usage rows written straight to llmusage, and funded accounts."""

from datetime import UTC, datetime
from decimal import Decimal
from itertools import count
from typing import Any

from django.db import transaction
from uuid_utils.compat import uuid7

from accounting.ledger import account_create, ledger_topup
from accounting.models import Account
from llmlog.ingest.storage import write_usage_rows
from llmlog.models import AccountingStatus

_numbers = count()
USE_TIME = datetime(2026, 11, 20, 10, 15, tzinfo=UTC)


def usage_row(**overrides: Any) -> dict[str, Any]:
    """A priced, pending llmusage row: acme uses openai's gpt-4o for 0.006, which costs 0.0048."""
    n = next(_numbers)
    row = {
        "id": uuid7(),
        "transno": f"post-{n:08d}-{uuid7().hex[:8]}",
        "taskid": "",
        "use_date": USE_TIME.date(),
        "use_time": USE_TIME,
        "responsed_seconds": 0.4,
        "finish_seconds": 1.2,
        "created_at": USE_TIME,
        "userid": "u-1",
        "username": "Ada",
        "userorgid": "acme",
        "token_id": "",
        "token_name": "",
        "token_key_hash": "",
        "group": "",
        "request_ip": None,
        "feature": "",
        "llmid": "gpt-4o",
        "model_name": "gpt-4o",
        "ownerid": "openai",
        "provider": "openai",
        "provider_type": "openai",
        "channel_id": "",
        "is_local": False,
        "is_global_provider": True,
        "endpoint": "/v1/chat/completions",
        "is_stream": False,
        "input_tokens": 1200,
        "output_tokens": 300,
        "cached_tokens": 0,
        "cache_creation_tokens": 0,
        "reasoning_tokens": 0,
        "image_input_tokens": 0,
        "web_search_count": 0,
        "total_tokens": 1500,
        "usages": None,
        "amount": Decimal("0.00600"),
        "cost": Decimal("0.00480"),
        "currency": "USD",
        "price": None,
        "status": "success",
        "code": 200,
        "error_message": "",
        "retry_times": 0,
        "ioinfo": None,
        "accounting_status": AccountingStatus.PENDING,
        "accounted_at": None,
        "metadata": {},
        "payload_hash": "",
    }
    row.update(overrides)
    return row


def insert_usage(rows: list[dict[str, Any]]) -> list:
    with transaction.atomic():
        write_usage_rows(rows)
    return [row["id"] for row in rows]


def make_accounts(
    *,
    customers: tuple[str, ...] = ("acme",),
    owners: tuple[str, ...] = ("openai",),
    funds: Decimal = Decimal("1000"),
    credit_limit: Decimal = Decimal(0),
    currency: str = "USD",
) -> dict[tuple[str, str], Account]:
    """Customer accounts topped up with `funds`, owner accounts, and the platform account."""
    accounts = {}
    for org in customers:
        accounts[(org, "customer")] = account_create(
            org=org, kind="customer", credit_limit=credit_limit, currency=currency
        )
        if funds:
            ledger_topup(org=org, amount=funds)
    for org in owners:
        accounts[(org, "owner")] = account_create(org=org, kind="owner", currency=currency)
    accounts[("platform", "platform")] = account_create(org="platform", kind="platform", currency=currency)
    return accounts


def balance(org: str, kind: str = "customer") -> Decimal:
    return Account.objects.get(org=org, kind=kind).balance
