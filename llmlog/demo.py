"""Synthetic usage for demos and benchmarks: many orgs, users and models over the last 30 days."""

import random
from collections.abc import Iterator
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from django.db import transaction
from django.utils import timezone
from uuid_utils.compat import uuid7

from accounting.accounts import account_create
from accounting.ledger import ledger_topup
from accounting.models import Account
from llmlog.ingest.storage import write_usage_rows
from llmlog.models import AccountingStatus, ModelPrice
from llmlog.pricing import PriceBook, TokenCounts, charge, price_snapshot

# (model_name, owner org, provider_type, sale price in/out per 1M, cost price in/out per 1M, reasoning?)
DEMO_MODELS = [
    ("gpt-4o", "openai", "openai", ("2.50", "10.00"), ("2.00", "8.00"), False),
    ("gpt-4o-mini", "openai", "openai", ("0.15", "0.60"), ("0.12", "0.48"), False),
    ("o3-mini", "openai", "openai", ("1.10", "4.40"), ("0.90", "3.50"), True),
    ("claude-sonnet-4", "anthropic", "anthropic", ("3.00", "15.00"), ("2.40", "12.00"), False),
    ("claude-haiku-3.5", "anthropic", "anthropic", ("0.80", "4.00"), ("0.64", "3.20"), False),
    ("gemini-2.5-pro", "google", "gemini", ("1.25", "10.00"), ("1.00", "8.00"), True),
    ("deepseek-chat", "deepseek", "openai", ("0.27", "1.10"), ("0.20", "0.90"), False),
    ("qwen-max", "alibaba", "openai", ("1.60", "6.40"), ("1.20", "5.00"), False),
    ("llama-3.1-70b", "platform", "ollama", ("0.40", "0.40"), None, False),
]
ERRORS = [
    (429, "Rate limit reached for requests"),
    (500, "The server had an error while processing your request"),
    (502, "Bad gateway: upstream closed the connection"),
    (400, "This model's maximum context length is 128000 tokens"),
]
FEATURES = ["chat", "agent", "embedding-rerank", "summarize", "code-review", ""]


def ensure_demo_prices(*, since: datetime) -> None:
    for name, owner, _ptype, sale, cost, _reasoning in DEMO_MODELS:
        for kind, prices in (("sale", sale), ("cost", cost)):
            if prices is None or ModelPrice.objects.filter(model_name=name, kind=kind).exists():
                continue
            ModelPrice.objects.create(
                model_name=name,
                # The price book names the model's owner: an org key's records take it from here.
                ownerid=owner,
                kind=kind,
                effective_from=since,
                input_price=Decimal(prices[0]),
                output_price=Decimal(prices[1]),
                cached_input_price=Decimal(prices[0]) / 10,
            )


DEMO_ORGS = [f"org-{i:02d}" for i in range(1, 21)]
# The last org runs on a shoestring: its postings fail with insufficient_balance, so the failures
# page has something to show. A tiny share of calls uses a model nobody priced: no_price failures.
SHOESTRING_ORG = DEMO_ORGS[-1]
UNPRICED_MODEL = ("experimental-x", "platform", "openai")


def ensure_demo_accounts() -> None:
    """Accounts for the demo orgs, model owners and the platform, so posting has somewhere to post."""
    owners = {owner for _name, owner, _ptype, _sale, cost, _reasoning in DEMO_MODELS if cost is not None}
    wanted = [(org, Account.Kind.CUSTOMER) for org in DEMO_ORGS]
    wanted += [(owner, Account.Kind.OWNER) for owner in sorted(owners)]
    wanted.append(("platform", Account.Kind.PLATFORM))
    for org, kind in wanted:
        if Account.objects.filter(org=org, kind=kind).exists():
            continue
        shoestring = org == SHOESTRING_ORG
        account_create(org=org, kind=kind, credit_limit=Decimal(0 if shoestring else 50))
        if kind == Account.Kind.CUSTOMER:
            ledger_topup(
                org=org, amount=Decimal("0.50" if shoestring else "5000"), memo="demo opening balance"
            )


def demo_rows(*, rows: int, days: int = 30, seed: int = 7, orgs: int = 20) -> Iterator[dict[str, Any]]:
    rng = random.Random(seed)
    now = timezone.now()
    start = now - timedelta(days=days)
    book = PriceBook(ModelPrice.objects.filter(model_name__in=[m[0] for m in DEMO_MODELS]))
    org_ids = DEMO_ORGS[:orgs]
    # A few big orgs and a long tail, as on a real gateway.
    org_weights = [1 / (rank + 1) for rank in range(len(org_ids))]
    users = {org: [f"{org}-user-{j:03d}" for j in range(1, rng.randint(3, 25))] for org in org_ids}
    model_weights = [30, 25, 6, 12, 8, 6, 7, 4, 2]
    span = (now - start).total_seconds()
    for _ in range(rows):
        org = rng.choices(org_ids, org_weights)[0]
        model = rng.choices(DEMO_MODELS, model_weights)[0]
        use_time = start + timedelta(seconds=rng.random() * span)
        yield _demo_row(rng, book, org=org, users=users[org], model=model, use_time=use_time)


def _demo_row(
    rng: random.Random, book: PriceBook, *, org: str, users: list[str], model: tuple, use_time: datetime
) -> dict[str, Any]:
    """One record of `model` for `org` at `use_time`; `rng` is drawn in a fixed order (seeded data)."""
    name, owner, ptype, _sale, _cost, reasoning = model
    failed = rng.random() < 0.03
    counts = _demo_counts(rng, failed=failed, reasoning=reasoning)
    sale = book.find(name, "sale", use_time)
    cost = book.find(name, "cost", use_time)
    amount = Decimal(0) if failed or sale is None else charge(sale, counts)
    cost_amount = Decimal(0) if failed or cost is None else charge(cost, counts)
    if not failed and rng.random() < 0.002:
        name, owner, ptype = UNPRICED_MODEL
        amount = cost_amount = sale = None
    code, error = rng.choice(ERRORS) if failed else (200, "")
    user = rng.choice(users)
    latency = rng.uniform(0.2, 3.0)
    return {
        "id": uuid7(),
        "transno": f"demo-{uuid7().hex}",
        "taskid": "",
        "use_date": timezone.localtime(use_time).date(),
        "use_time": use_time,
        "responsed_seconds": round(latency, 3),
        "finish_seconds": round(latency + counts.output_tokens / rng.uniform(40, 120), 3),
        "created_at": use_time + timedelta(seconds=1),
        **_demo_caller(rng, org=org, user=user),
        **_demo_model(name=name, owner=owner, ptype=ptype),
        "is_stream": rng.random() < 0.6,
        **counts.__dict__,
        "total_tokens": counts.input_tokens + counts.output_tokens,
        "usages": None,
        "amount": amount,
        "cost": cost_amount,
        "provider_cost": None,
        "currency": "USD",
        "price": {"sale": price_snapshot(sale)} if sale and not failed else None,
        "status": "failed" if failed else "success",
        "code": code,
        "error_message": error,
        "retry_times": 0,
        "ioinfo": None,
        "accounting_status": AccountingStatus.PENDING
        if amount is None or amount or cost_amount
        else AccountingStatus.SKIPPED,
        "accounted_at": None,
        "metadata": {},
        "payload_hash": "",
    }


def _demo_counts(rng: random.Random, *, failed: bool, reasoning: bool) -> TokenCounts:
    input_tokens = int(rng.lognormvariate(6.5, 1.2))
    cached = int(input_tokens * rng.choice((0, 0, 0.3, 0.8)))
    output_tokens = 0 if failed else int(rng.lognormvariate(5.5, 1.0))
    return TokenCounts(
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        cached_tokens=cached,
        reasoning_tokens=int(output_tokens * 0.6) if reasoning else 0,
    )


def _demo_caller(rng: random.Random, *, org: str, user: str) -> dict[str, Any]:
    """Who called: the org, the user and their key, the group, an address, the feature."""
    return {
        "userid": user,
        "username": user.replace("-", " ").title(),
        "userorgid": org,
        "token_id": f"{user}-tok",
        "token_name": f"{user.rsplit('-', 1)[-1]} key",
        "token_key_hash": "",
        "group": rng.choice(("default", "default", "vip")),
        "request_ip": f"10.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}",
        "feature": rng.choice(FEATURES),
    }


def _demo_model(*, name: str, owner: str, ptype: str) -> dict[str, Any]:
    """Which model and provider served the call."""
    return {
        "llmid": name,
        "model_name": name,
        "ownerid": owner,
        "provider": owner,
        "provider_type": ptype,
        "channel_id": f"ch-{owner}",
        "is_local": ptype == "ollama",
        "is_global_provider": ptype != "ollama",
        "endpoint": "/v1/chat/completions",
    }


def load_demo_data(*, rows: int, days: int = 30, seed: int = 7, batch_size: int = 5000) -> int:
    """Write `rows` synthetic records into llmusage; returns how many were written."""
    ensure_demo_prices(since=timezone.now() - timedelta(days=days + 1))
    ensure_demo_accounts()
    written = 0
    batch: list[dict[str, Any]] = []
    for row in demo_rows(rows=rows, days=days, seed=seed):
        batch.append(row)
        if len(batch) >= batch_size:
            written += _write(batch)
            batch = []
    written += _write(batch)
    return written


def _write(batch: list[dict[str, Any]]) -> int:
    with transaction.atomic():
        write_usage_rows(batch)
    return len(batch)
