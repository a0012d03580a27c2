"""Data for the hardening tests (fuzzing, hostile queries, tenancy): two orgs whose records are easy to
tell apart, in every place a read can find them.

Every text field of a globex record carries GLOBEX_MARK (and acme's ACME_MARK), its amounts and token
counts are far from acme's, and each org has hot records (pending, accounted, failed, one started a
few seconds ago so RPM/TPM count it), a history record, an account with ledger lines and an open
accounting failure. A response for acme that holds GLOBEX_MARK, or a total that is not acme's own, has
let globex's data in.
"""

import hashlib
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from typing import Any

from django.utils import timezone

from accounting.accounts import account_create
from accounting.failures import FailedPosting, failures_record
from accounting.ledger import ledger_topup
from llmlog.models import LLMUsage, LLMUsageHistory, UsageRecord

ORGS = ("acme", "globex")
ACME_MARK = "acmemark9q"
GLOBEX_MARK = "globexmark7z"
MARKS = {"acme": ACME_MARK, "globex": GLOBEX_MARK}
# Per org: what every record of the org is worth, so a total that includes another org's record shows.
AMOUNTS = {"acme": Decimal("0.01234"), "globex": Decimal("777.00001")}
INPUT_TOKENS = {"acme": 1000, "globex": 9_000_000}
OUTPUT_TOKENS = {"acme": 200, "globex": 3_000_000}
# The gateway key each org's records were made with (new-api's /api/log/token?key=).
GATEWAY_KEYS = {"acme": "sk-acme-gateway-key", "globex": "sk-globex-gateway-key"}


@dataclass
class OrgData:
    org: str
    hot: list[LLMUsage] = field(default_factory=list)
    history: list[LLMUsageHistory] = field(default_factory=list)

    @property
    def records(self) -> list[UsageRecord]:
        return [*self.hot, *self.history]

    @property
    def ids(self) -> set[str]:
        return {str(record.pk) for record in self.records}

    @property
    def amount(self) -> Decimal:
        return sum((record.amount for record in self.records), Decimal(0))


def _record(model: type[UsageRecord], org: str, n: int, **overrides: Any) -> UsageRecord:
    mark = MARKS[org]
    use_time = overrides.pop("use_time", timezone.now() - timedelta(days=2, minutes=n))
    values: dict[str, Any] = {
        "transno": f"{mark}-t{n}",
        "taskid": f"{mark}-task",
        "use_time": use_time,
        "use_date": timezone.localdate(use_time),
        "userid": f"{mark}-user",
        "username": f"{mark}-name",
        "userorgid": org,
        "token_id": f"{mark}-tok",
        "token_name": f"{mark}-token",
        "token_key_hash": hashlib.sha256(GATEWAY_KEYS[org].encode()).hexdigest(),
        "group": f"{mark}-group",
        "feature": f"{mark}-feature",
        "llmid": f"{mark}-llm",
        "model_name": f"{mark}-model",
        "ownerid": f"{mark}-owner",
        "provider": f"{mark}-provider",
        "provider_type": "openai",
        "channel_id": f"{mark}-channel",
        "endpoint": f"/v1/chat/completions?{mark}",
        "input_tokens": INPUT_TOKENS[org],
        "output_tokens": OUTPUT_TOKENS[org],
        "amount": AMOUNTS[org],
        "cost": AMOUNTS[org] / 2,
        "status": "success",
        "code": 200,
        "error_message": "",
        "ioinfo": {"request": f"{mark} prompt", "response": f"{mark} answer", "truncated": False},
        "metadata": {"incidentId": f"{mark}-incident", "tag": mark},
        "accounting_status": "accounted",
        "accounted_at": timezone.now(),
        "price": {"sale": {"input_price": "1", "note": mark}},
    }
    if model is LLMUsageHistory:
        values["backup_time"] = timezone.now()
    values.update(overrides)
    values["total_tokens"] = values["input_tokens"] + values["output_tokens"]
    return model.objects.create(**values)


def seed_org(org: str) -> OrgData:
    """One org's records, account, ledger lines and open failure (see the module docstring)."""
    mark = MARKS[org]
    data = OrgData(org=org)
    data.hot.append(_record(LLMUsage, org, 1, accounting_status="pending", accounted_at=None))
    data.hot.append(_record(LLMUsage, org, 2))
    data.hot.append(
        _record(
            LLMUsage,
            org,
            3,
            use_time=timezone.now() - timedelta(seconds=5),
            accounting_status="pending",
            accounted_at=None,
        )
    )
    failed = _record(
        LLMUsage,
        org,
        4,
        status="failed",
        code=500,
        error_message=f"upstream exploded {mark}",
        accounting_status="failed",
        accounted_at=None,
    )
    data.hot.append(failed)
    data.history.append(_record(LLMUsageHistory, org, 5, use_time=timezone.now() - timedelta(days=40)))

    account_create(org=org, kind="customer")
    ledger_topup(org=org, amount=Decimal("10"), reference=f"{mark}-topup", memo=f"{mark} memo")
    failures_record(
        failures=[
            FailedPosting(
                usage_id=failed.pk,
                transno=failed.transno,
                use_date=failed.use_date,
                error_code="insufficient_balance",
                error_message=f"{mark} is out of money",
                userid=failed.userid,
                userorgid=org,
                ownerid=failed.ownerid,
                llmid=failed.llmid,
                model_name=failed.model_name,
                amount=failed.amount,
                cost=failed.cost,
            )
        ]
    )
    return data


def seed_orgs() -> dict[str, OrgData]:
    return {org: seed_org(org) for org in ORGS}
