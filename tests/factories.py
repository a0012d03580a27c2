"""The one factory for usage records in tests: as a gateway sends them (payloads), as storage writes
them (rows), and saved (hot or history); plus the ledger accounts posting needs.

- `usage_payload` / `org_payload`: a record as a platform key's / an org key's gateway POSTs it.
- `usage_row` + `insert_usage`: complete llmusage rows written the way ingest writes them (COPY).
- `make_usage`: one saved record through the ORM, LLMUsage or LLMUsageHistory; `QUERY_RECORD` is the
  query tests' record (a fixed day, accounted, 1000 + 200 tokens), passed first: make_usage(QUERY_RECORD,
  userorgid="globex").
- `ingest_records`, `move_to_history`: through the ingest service; the nightly move by hand.
- `make_accounts`, `balance`: funded ledger accounts; `make_failure`: one failed posting, recorded.
"""

import itertools
import json
from collections.abc import Mapping
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from django.db import transaction
from django.utils import timezone
from uuid_utils.compat import uuid7

from accounting.accounts import account_create
from accounting.failures import failure_record
from accounting.ledger import ledger_topup
from accounting.models import Account, AccountingFailure
from llmlog.ingest.service import usage_ingest
from llmlog.ingest.storage import write_usage_rows
from llmlog.models import AccountingStatus, LLMUsage, LLMUsageHistory, UsageRecord

_numbers = itertools.count(1)
# The day most tests' records happen on.
USE_TIME = datetime(2026, 11, 20, 10, 15, tzinfo=UTC)
# Only a platform key may state these; an org key's records are priced from the price book.
PLATFORM_ONLY = ("amount", "cost", "ownerid", "price")


# --- payloads -------------------------------------------------------------------------------------


def usage_payload(**overrides: Any) -> dict[str, Any]:
    """A valid record as a gateway sends it with a platform key: acme's gpt-4o call of 1200 + 300
    tokens (200 cached) for 0.006, which costs 0.0048."""
    payload = {
        "transno": f"req-{next(_numbers):08d}",
        "use_time": USE_TIME.isoformat(),
        "userid": "u-1",
        "username": "Ada",
        "userorgid": "acme",
        "model_name": "gpt-4o",
        "llmid": "gpt-4o",
        "ownerid": "openai",
        "provider_type": "openai",
        "input_tokens": 1200,
        "output_tokens": 300,
        "cached_tokens": 200,
        "reasoning_tokens": 0,
        "amount": "0.00600",
        "cost": "0.00480",
        "status": "success",
        "code": 200,
    }
    payload.update(overrides)
    return payload


def org_payload(**overrides: Any) -> dict[str, Any]:
    """usage_payload as an org key's gateway sends it: without the platform-only fields (overrides may
    still add them back)."""
    payload = usage_payload()
    for name in PLATFORM_ONLY:
        payload.pop(name, None)
    payload.update(overrides)
    return payload


# --- rows -----------------------------------------------------------------------------------------


def usage_row(**overrides: Any) -> dict[str, Any]:
    """A complete, priced, pending llmusage row: acme uses openai's gpt-4o for 0.006, which costs 0.0048."""
    row = {
        "id": uuid7(),
        "transno": f"post-{next(_numbers):08d}-{uuid7().hex[:8]}",
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
        "provider_cost": None,
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
    """`rows` (usage_row) written by ingest's storage in one transaction; their ids."""
    with transaction.atomic():
        write_usage_rows(rows)
    return [row["id"] for row in rows]


# --- saved records --------------------------------------------------------------------------------

# The query tests' record: a fixed day, accounted, 1000 + 200 tokens (100 cached), no HTTP code.
QUERY_RECORD: Mapping[str, Any] = {
    "use_time": USE_TIME,
    "input_tokens": 1000,
    "output_tokens": 200,
    "cached_tokens": 100,
    "code": None,
    "accounting_status": "accounted",
}


def make_usage(
    *presets: Mapping[str, Any], model: type[UsageRecord] = LLMUsage, **overrides: Any
) -> UsageRecord:
    """One saved record (LLMUsage by default, or LLMUsageHistory): acme's gpt-4o call of 100 + 50
    tokens for 0.01 (cost 0.008), now, pending (history: accounted); then each preset (QUERY_RECORD),
    then the overrides. use_date follows use_time in the current time zone, total_tokens the token
    counts, unless given."""
    fields: dict[str, Any] = {
        "transno": f"t-{next(_numbers):06d}",
        "use_time": None,
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
    for preset in presets:
        fields.update(preset)
    fields.update(overrides)
    fields["use_time"] = fields["use_time"] or timezone.now()
    fields.setdefault("use_date", timezone.localdate(fields["use_time"]))
    fields.setdefault("total_tokens", fields["input_tokens"] + fields["output_tokens"])
    return model.objects.create(**fields)


def ingest_records(*records: dict) -> list[str]:
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


# --- ledger ---------------------------------------------------------------------------------------


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


def make_failure(**overrides: Any) -> AccountingFailure:
    """One failed posting, recorded as posting records it (open, one attempt): acme's gpt-4o call of
    2026-11-20 that found no customer account, under a transno of its own unless given."""
    values = {
        "usage_id": uuid7(),
        "transno": f"req-{uuid7().hex[-8:]}",
        "use_date": date(2026, 11, 20),
        "error_code": "no_account",
        "error_message": "Org 'acme' has no customer account.",
        "userid": "u-1",
        "userorgid": "acme",
        "ownerid": "openai",
        "llmid": "gpt-4o",
        "model_name": "gpt-4o",
        "amount": Decimal("0.00600"),
        "cost": Decimal("0.00480"),
    }
    values.update(overrides)
    return failure_record(**values)
