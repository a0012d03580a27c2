"""Tenancy: who sees and changes what, over every endpoint of the API and every dialect.

Both orgs are seeded with records that are easy to tell apart (tests/hardening.py: every text of a
globex record holds GLOBEX_MARK, its amounts and token counts are far from acme's). Seven personas call
every operation of the OpenAPI schema (and /metrics), each aimed at globex's data where it names any:

- acme's admin key, acme's reader key and globex's admin key: an org key reads, counts, sums, facets and
  searches its own org only; another org's record is a 404; it writes only into its own org, and only
  with the scope and role the operation needs, and never changes or deletes usage (even its own: a
  platform admin's, DESIGN.md);
- a revoked key: 401 everywhere;
- a platform admin key and a staff session holding the API's Django permissions: everything (a staff
  session without them: tests/test_permissions.py);
- a signed-in user who is not staff: 403 everywhere.

The matrix is checked against the schema, so an operation added later fails
`test_the_matrix_covers_every_operation` until its row says who may call it.
"""

import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.contrib.auth.models import Permission, User
from django.db.models import F
from django.http import HttpResponse
from django.test import Client
from django.utils import timezone
from drf_spectacular.generators import SchemaGenerator
from rest_framework.test import APIClient

from accounting.budgets import budget_create
from accounting.holds import HoldRequest, hold_grant
from accounting.models import Account, AccountingFailure, Budget, Hold, Repricing
from accounting.statements import last_ended_month
from llmlog.api.dialects.common import quota_units
from llmlog.keys import api_key_create, api_key_revoke
from llmlog.models import LLMUsage, LLMUsageHistory, ModelPrice, UsageAll
from llmlog.repricing import repricing_create
from llmlog.statements import close_period
from tests.hardening import ACME_MARK, AMOUNTS, GATEWAY_KEYS, GLOBEX_MARK, OrgData, seed_orgs

pytestmark = pytest.mark.django_db

# What a staff session needs for every operation of the API (llmlog.api.auth.required_permission).
STAFF_PERMISSIONS = (
    "view_llmusage",
    "add_llmusage",
    "change_llmusage",
    "delete_llmusage",
    "view_llmusagehistory",
    "view_account",
    "view_statement",
    "add_account",
    "change_account",
    "view_accountingfailure",
    "change_accountingfailure",
    "view_budget",
    "add_budget",
    "change_budget",
    "delete_budget",
    "view_hold",
    "add_hold",
    "delete_hold",
    "view_repricing",
    "add_repricing",
    "change_repricing",
)
PERSONAS = ("acme", "acme_reader", "globex", "revoked", "platform", "staff", "nonstaff")
ORG_OF = {"acme": "acme", "acme_reader": "acme", "globex": "globex"}


@dataclass
class World:
    """The seeded data and one client per persona."""

    orgs: dict[str, OrgData]
    clients: dict[str, Any] = field(default_factory=dict)

    def other(self, persona: str) -> OrgData:
        """What every call aims at: globex's data. acme's keys must not reach it; globex's own key, the
        platform key and a staff session may."""
        return self.orgs["globex"]


@pytest.fixture
def world(db, settings) -> World:
    settings.LLMLOG_INGEST_RATE = None
    world = World(orgs=seed_orgs())
    keys = {
        "acme": api_key_create(userorgid="acme", role="admin", scopes=["ingest", "read"])[1],
        "acme_reader": api_key_create(userorgid="acme", role="reader", scopes=["read"])[1],
        "globex": api_key_create(userorgid="globex", role="admin", scopes=["ingest", "read"])[1],
        "platform": api_key_create(userorgid="", role="admin", scopes=["ingest", "read"])[1],
    }
    revoked, raw = api_key_create(userorgid="acme", role="admin", scopes=["ingest", "read"])
    api_key_revoke(key=revoked)
    keys["revoked"] = raw
    for persona, raw in keys.items():
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
        world.clients[persona] = client
    for persona, is_staff in (("staff", True), ("nonstaff", False)):
        user = User.objects.create_user(persona, password="x", is_staff=is_staff)
        if is_staff:
            user.user_permissions.set(Permission.objects.filter(codename__in=STAFF_PERMISSIONS))
        client = APIClient()
        client.force_login(user)
        world.clients[persona] = client
    return world


# --- the operations ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Call:
    url: str
    body: Any = None
    content_type: str = "application/json"


@dataclass(frozen=True)
class Operation:
    """One operation, as a request aimed at the other org's data, and the status each persona gets."""

    method: str
    path: str  # as the schema names it
    call: Callable[[World, str], Call]
    expect: dict[str, int]
    # After the call, for a persona that must not reach the other org: nothing of it changed.
    writes: bool = False


def statuses(own: int, other: int | None = None, **overrides: int) -> dict[str, int]:
    """acme's keys get `other` (globex's data is another org's to them); globex's key and the platform
    personas get `own`; a revoked key 401, a non-staff session 403."""
    other = own if other is None else other
    table = {
        "acme": other,
        "acme_reader": other,
        "globex": own,
        "revoked": 401,
        "platform": own,
        "staff": own,
        "nonstaff": 403,
    }
    table.update(overrides)
    return table


READ = statuses(200)
OWN_ONLY = statuses(200, 404)  # another org's object is a 404, never a 403
PLATFORM_ADMIN = statuses(200, 403, globex=403)
PLATFORM_ADMIN_201 = statuses(201, 403, globex=403)


def hot(world: World, persona: str) -> LLMUsage:
    return world.other(persona).hot[0]  # pending: an owner may still correct or delete it


def usage_record(world: World, persona: str) -> dict[str, Any]:
    org = world.other(persona).org
    return {"transno": f"tenancy-{uuid.uuid4().hex}", "model_name": f"{org}-model", "userorgid": org}


def litellm_record(world: World, persona: str) -> dict[str, Any]:
    start = time.time() - 60
    org = world.other(persona).org
    return {
        "id": f"chatcmpl-{uuid.uuid4()}",
        "call_type": "acompletion",
        "status": "success",
        "custom_llm_provider": "openai",
        "startTime": start,
        "endTime": start + 1.5,
        "completionStartTime": start + 0.4,
        "model": "gpt-4o",
        "metadata": {"user_api_key_org_id": org, "user_api_key_user_id": "u-1"},
        "response_cost": 0.00125,
        "prompt_tokens": 100,
        "completion_tokens": 50,
        "total_tokens": 150,
    }


def otlp_body(world: World, persona: str) -> str:
    start = time.time_ns() - 60 * 10**9
    attributes = [
        {"key": "gen_ai.request.model", "value": {"stringValue": "gpt-4o"}},
        {"key": "gen_ai.usage.input_tokens", "value": {"intValue": 42}},
        {"key": "gen_ai.usage.output_tokens", "value": {"intValue": 7}},
        {"key": "metadata.user_api_key_org_id", "value": {"stringValue": world.other(persona).org}},
    ]
    span = {
        "traceId": uuid.uuid4().hex,
        "spanId": uuid.uuid4().hex[:16],
        "name": "chat gpt-4o",
        "startTimeUnixNano": str(start),
        "endTimeUnixNano": str(start + 10**9),
        "attributes": attributes,
    }
    return json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": [span]}]}]})


def failure(world: World, persona: str) -> AccountingFailure:
    return AccountingFailure.objects.get(userorgid=world.other(persona).org)


def budget(world: World, persona: str) -> Budget:
    """The other org's budget (made once: an operation's call is built more than once)."""
    org = world.other(persona).org
    return Budget.objects.filter(org=org, name="tenancy").first() or budget_create(
        org=org, limit=Decimal(1), name="tenancy"
    )


def closed_month(world: World, persona: str) -> str:
    """The other org's last ended month, closed (its account backdated so that the month is its)."""
    org = world.other(persona).org
    Account.objects.filter(org=org, kind="customer").update(created_at=datetime(2000, 1, 1, tzinfo=UTC))
    month = last_ended_month(time_zone="UTC", now=datetime.now(UTC))
    close_period(month=month, org=org)
    return f"{month:%Y-%m}"


def cost_drift(world: World, persona: str) -> Call:
    """Every org's records with a reported cost (their drift rows name their model, the org's mark)."""
    for model in (LLMUsage, LLMUsageHistory):
        model.objects.update(provider_cost=F("cost") * 2)
    return Call("/api/llmusage/cost-drift/?start_time=2000-01-01T00:00:00Z")


def hold(world: World, persona: str) -> Hold:
    request = HoldRequest(org=world.other(persona).org, transno="tenancy-hold", amount=Decimal("0.01"))
    return hold_grant(request=request)[0]  # the same transno again: the same hold


def hold_request(world: World, persona: str) -> dict[str, Any]:
    """An admission for the other org, priced from the book (an org key may not state the amount)."""
    ModelPrice.objects.get_or_create(
        model_name="tenancy-priced",
        kind="sale",
        defaults={"input_price": Decimal(1), "output_price": Decimal(1)},
    )
    return {
        "transno": f"hold-{uuid.uuid4().hex}",
        "userorgid": world.other(persona).org,
        "model_name": "tenancy-priced",
        "input_tokens": 100,
        "max_output_tokens": 100,
    }


def repricing(world: World, persona: str) -> Repricing:
    """A dry run over the other org's records, made afresh for each call (applying one is a change)."""
    today = timezone.localdate()
    return repricing_create(start=today - timedelta(days=400), end=today, userorgid=world.other(persona).org)


def repricing_range(world: World, persona: str) -> dict[str, Any]:
    today = timezone.localdate()
    return {
        "start": str(today - timedelta(days=400)),
        "end": str(today),
        "userorgid": world.other(persona).org,
    }


SELECTED = (
    "projectId",
    "modelName",
    "userId",
    "costInUSDCents",
    "statusMessage",
    "incidentId",
    "requestPrompt",
)
ALL_FIELDS = {"select": dict.fromkeys(SELECTED, True)}

OPERATIONS = [
    # native usage API
    Operation("GET", "/api/llmusage/", lambda w, p: Call("/api/llmusage/"), READ),
    Operation(
        "POST",
        "/api/llmusage/",
        lambda w, p: Call("/api/llmusage/", usage_record(w, p)),
        statuses(201, 400, acme_reader=403),
        writes=True,
    ),
    Operation("GET", "/api/llmusage/{id}/", lambda w, p: Call(f"/api/llmusage/{hot(w, p).pk}/"), OWN_ONLY),
    Operation(
        "PATCH",
        "/api/llmusage/{id}/",
        lambda w, p: Call(f"/api/llmusage/{hot(w, p).pk}/", {"feature": "changed"}),
        PLATFORM_ADMIN,  # usage is changed by the platform only, even an org's own record
        writes=True,
    ),
    Operation(
        "DELETE",
        "/api/llmusage/{id}/",
        lambda w, p: Call(f"/api/llmusage/{hot(w, p).pk}/"),
        statuses(204, 403, globex=403),  # usage is deleted by the platform only
        writes=True,
    ),
    Operation("GET", "/api/llmusage/count/", lambda w, p: Call("/api/llmusage/count/?status=success"), READ),
    Operation(
        "GET",
        "/api/llmusage/search/",
        lambda w, p: Call(f"/api/llmusage/search/?keyword={w.other(p).hot[0].transno}"),
        READ,
    ),
    Operation("GET", "/api/llmusage/stats/", lambda w, p: Call("/api/llmusage/stats/"), READ),
    Operation("GET", "/api/llmusage/rates/", lambda w, p: Call("/api/llmusage/rates/"), READ),
    Operation("GET", "/api/llmusage/cost-drift/", cost_drift, READ),
    Operation("GET", "/api/llmusage-history/", lambda w, p: Call("/api/llmusage-history/"), READ),
    Operation(
        "GET",
        "/api/llmusage-history/{id}/",
        lambda w, p: Call(f"/api/llmusage-history/{w.other(p).history[0].pk}/"),
        OWN_ONLY,
    ),
    Operation(
        "GET",
        "/api/llmusage-history/count/",
        lambda w, p: Call("/api/llmusage-history/count/?status=success"),
        READ,
    ),
    # accounting
    Operation("GET", "/api/accounting-failures/", lambda w, p: Call("/api/accounting-failures/"), READ),
    Operation(
        "GET",
        "/api/accounting-failures/{id}/",
        lambda w, p: Call(f"/api/accounting-failures/{failure(w, p).pk}/"),
        OWN_ONLY,
    ),
    Operation(
        "POST",
        "/api/accounting-failures/{id}/retry/",
        lambda w, p: Call(f"/api/accounting-failures/{failure(w, p).pk}/retry/"),
        statuses(200, 404, acme_reader=403),
        writes=True,
    ),
    Operation(
        "POST",
        "/api/accounting-failures/retry/",
        lambda w, p: Call("/api/accounting-failures/retry/", {"ids": [failure(w, p).pk]}),
        statuses(200, acme_reader=403),
        writes=True,
    ),
    Operation(
        "POST",
        "/api/accounting-failures/{id}/resolve/",
        lambda w, p: Call(f"/api/accounting-failures/{failure(w, p).pk}/resolve/"),
        PLATFORM_ADMIN,
        writes=True,
    ),
    Operation(
        "POST",
        "/api/accounting-failures/{id}/ignore/",
        lambda w, p: Call(f"/api/accounting-failures/{failure(w, p).pk}/ignore/"),
        PLATFORM_ADMIN,
        writes=True,
    ),
    Operation("GET", "/api/accounts/", lambda w, p: Call("/api/accounts/"), READ),
    Operation(
        "POST",
        "/api/accounts/",
        lambda w, p: Call("/api/accounts/", {"org": w.other(p).org, "kind": "owner"}),
        PLATFORM_ADMIN_201,
        writes=True,
    ),
    Operation("GET", "/api/accounts/{org}/", lambda w, p: Call(f"/api/accounts/{w.other(p).org}/"), OWN_ONLY),
    Operation(
        "PATCH",
        "/api/accounts/{org}/",
        lambda w, p: Call(f"/api/accounts/{w.other(p).org}/", {"credit_limit": "1000"}),
        PLATFORM_ADMIN,
        writes=True,
    ),
    Operation(
        "GET",
        "/api/accounts/{org}/lines/",
        lambda w, p: Call(f"/api/accounts/{w.other(p).org}/lines/"),
        OWN_ONLY,
    ),
    Operation(
        "POST",
        "/api/accounts/{org}/topup/",
        lambda w, p: Call(f"/api/accounts/{w.other(p).org}/topup/", {"amount": "1000"}),
        PLATFORM_ADMIN_201,
        writes=True,
    ),
    Operation(
        "GET",
        "/api/accounts/{org}/statements/",
        lambda w, p: Call(f"/api/accounts/{w.other(p).org}/statements/"),
        OWN_ONLY,
    ),
    Operation(
        "GET",
        "/api/accounts/{org}/statements/{month}/",
        lambda w, p: Call(f"/api/accounts/{w.other(p).org}/statements/{closed_month(w, p)}/"),
        OWN_ONLY,
    ),
    # budgets (an org admin manages its own org's) and holds (a gateway key admits its own org's calls)
    Operation("GET", "/api/budgets/", lambda w, p: Call("/api/budgets/"), READ),
    Operation(
        "POST",
        "/api/budgets/",
        lambda w, p: Call("/api/budgets/", {"org": w.other(p).org, "limit": "5"}),
        statuses(201, 403),
        writes=True,
    ),
    Operation("GET", "/api/budgets/{id}/", lambda w, p: Call(f"/api/budgets/{budget(w, p).pk}/"), OWN_ONLY),
    Operation(
        "PATCH",
        "/api/budgets/{id}/",
        lambda w, p: Call(f"/api/budgets/{budget(w, p).pk}/", {"limit": "2"}),
        statuses(200, 404, acme_reader=403),
        writes=True,
    ),
    Operation(
        "DELETE",
        "/api/budgets/{id}/",
        lambda w, p: Call(f"/api/budgets/{budget(w, p).pk}/"),
        statuses(204, 404, acme_reader=403),
        writes=True,
    ),
    Operation("GET", "/api/holds/", lambda w, p: Call("/api/holds/"), READ),
    Operation(
        "POST",
        "/api/holds/",
        lambda w, p: Call("/api/holds/", hold_request(w, p)),
        statuses(201, 403),
        writes=True,
    ),
    Operation("GET", "/api/holds/{id}/", lambda w, p: Call(f"/api/holds/{hold(w, p).pk}/"), OWN_ONLY),
    Operation(
        "DELETE",
        "/api/holds/{id}/",
        lambda w, p: Call(f"/api/holds/{hold(w, p).pk}/"),
        statuses(200, 404, acme_reader=403),
        writes=True,
    ),
    # gateway adapters: a record claiming the other org
    Operation(
        "POST",
        "/api/ingest/litellm/",
        lambda w, p: Call("/api/ingest/litellm/", [litellm_record(w, p)]),
        statuses(201, 400, acme_reader=403),
        writes=True,
    ),
    Operation(
        "POST",
        "/api/ingest/otlp/v1/traces",
        lambda w, p: Call("/api/ingest/otlp/v1/traces", otlp_body(w, p)),
        statuses(200, acme_reader=403),  # OTLP answers 200 with the span counted as rejected
        writes=True,
    ),
    Operation(
        "POST",
        "/v1/traces",
        lambda w, p: Call("/v1/traces", otlp_body(w, p)),
        statuses(200, acme_reader=403),
        writes=True,
    ),
    # OneUptime
    Operation(
        "GET",
        "/api/llm-log/{id}/get-item",
        lambda w, p: Call(f"/api/llm-log/{hot(w, p).pk}/get-item?select={json.dumps(ALL_FIELDS['select'])}"),
        OWN_ONLY,
    ),
    Operation(
        "POST",
        "/api/llm-log/{id}/get-item",
        lambda w, p: Call(f"/api/llm-log/{hot(w, p).pk}/get-item", ALL_FIELDS),
        OWN_ONLY,
    ),
    Operation("POST", "/api/llm-log/count", lambda w, p: Call("/api/llm-log/count", {"query": {}}), READ),
    Operation(
        "GET",
        "/api/llm-log/get-list",
        lambda w, p: Call(f"/api/llm-log/get-list?limit=100&select={json.dumps(ALL_FIELDS['select'])}"),
        READ,
    ),
    Operation(
        "POST",
        "/api/llm-log/get-list",
        lambda w, p: Call("/api/llm-log/get-list?limit=100", ALL_FIELDS),
        READ,
    ),
    # new-api
    Operation("GET", "/api/log/", lambda w, p: Call("/api/log/"), PLATFORM_ADMIN),
    Operation(
        "DELETE",
        "/api/log/",
        lambda w, p: Call(f"/api/log/?target_timestamp={int(time.time()) + 3600}"),
        statuses(200, acme_reader=403),
        writes=True,
    ),
    Operation("GET", "/api/log/self", lambda w, p: Call("/api/log/self?page_size=100"), READ),
    Operation("GET", "/api/log/self/stat", lambda w, p: Call("/api/log/self/stat"), READ),
    Operation(
        "GET",
        "/api/log/self/search",
        lambda w, p: Call(f"/api/log/self/search?keyword={w.other(p).hot[0].userid}"),
        READ,
    ),
    Operation("GET", "/api/log/stat", lambda w, p: Call("/api/log/stat"), PLATFORM_ADMIN),
    Operation(
        "GET",
        "/api/log/search",
        lambda w, p: Call(f"/api/log/search?keyword={GLOBEX_MARK}-user"),
        PLATFORM_ADMIN,
    ),
    # the gateway key is the credential: anyone holding it reads its records, nobody else's
    Operation(
        "GET",
        "/api/log/token",
        lambda w, p: Call(f"/api/log/token?key={GATEWAY_KEYS[ORG_OF.get(p, 'acme')]}"),
        dict.fromkeys(PERSONAS, 200),
    ),
    # AI Proxy
    Operation("GET", "/api/logs/search", lambda w, p: Call("/api/logs/search?per_page=100"), READ),
    Operation(
        "GET",
        "/api/log/{group}/search",
        lambda w, p: Call(f"/api/log/{w.other(p).org}/search?per_page=100"),
        OWN_ONLY,
    ),
    # Billing exports (issue 20): the month the seeded records are in
    Operation(
        "GET",
        "/api/exports/focus/",
        lambda w, p: Call(f"/api/exports/focus/?month={time.strftime('%Y-%m', time.gmtime())}"),
        READ,
    ),
    # Re-pricing (issue 20) moves every org's money: the platform's only
    Operation("GET", "/api/repricings/", lambda w, p: Call("/api/repricings/"), PLATFORM_ADMIN),
    Operation(
        "POST",
        "/api/repricings/",
        lambda w, p: Call("/api/repricings/", repricing_range(w, p)),
        PLATFORM_ADMIN_201,
        writes=True,
    ),
    Operation(
        "GET",
        "/api/repricings/{id}/",
        lambda w, p: Call(f"/api/repricings/{repricing(w, p).pk}/"),
        PLATFORM_ADMIN,
    ),
    Operation(
        "POST",
        "/api/repricings/{id}/apply/",
        lambda w, p: Call(f"/api/repricings/{repricing(w, p).pk}/apply/"),
        PLATFORM_ADMIN,
        writes=True,
    ),
    Operation(
        "GET",
        "/api/repricings/{id}/records.csv/",
        lambda w, p: Call(f"/api/repricings/{repricing(w, p).pk}/records.csv/"),
        PLATFORM_ADMIN,
    ),
    # not in the API schema: Prometheus, for a scrape token or a staff session only
    Operation(
        "GET",
        "/metrics",
        lambda w, p: Call("/metrics"),
        {**dict.fromkeys(PERSONAS, 401), "staff": 200, "nonstaff": 403},
    ),
]
BY_KEY = {(op.method, op.path): op for op in OPERATIONS}


def test_the_matrix_covers_every_operation():
    schema = SchemaGenerator().get_schema(request=None, public=True)
    in_schema = {(method.upper(), path) for path, ops in schema["paths"].items() for method in ops}

    assert in_schema - set(BY_KEY) == set(), "operations without a tenancy row"
    assert set(BY_KEY) - in_schema == {("GET", "/metrics")}


def send(world: World, persona: str, op: Operation):
    call = op.call(world, persona)
    client = world.clients[persona]
    if op.method in ("GET", "DELETE"):
        return read_whole(client.generic(op.method, call.url))
    body = call.body if isinstance(call.body, str) else json.dumps(call.body or {})
    return client.generic(op.method, call.url, data=body, content_type=call.content_type)


def read_whole(response: Any) -> Any:
    """A streamed answer (an export) read whole, as its client reads it, so it has `content` too."""
    if not getattr(response, "streaming", False):
        return response
    body = b"".join(response.streaming_content)
    return HttpResponse(body, status=response.status_code, content_type=response["Content-Type"])


def snapshot(org: OrgData) -> dict[str, Any]:
    """Everything of an org a write could touch."""
    return {
        "usage": sorted(
            (str(row["id"]), row["feature"], row["accounting_status"], str(row["amount"]))
            for row in UsageAll.objects.filter(userorgid=org.org).values(
                "id", "feature", "accounting_status", "amount"
            )
        ),
        "failures": sorted(AccountingFailure.objects.filter(userorgid=org.org).values_list("id", "status")),
        "accounts": sorted(
            (a.kind, a.balance, a.credit_limit, a.status) for a in Account.objects.filter(org=org.org)
        ),
        "budgets": sorted(Budget.objects.filter(org=org.org).values_list("id", "limit")),
        "holds": sorted(Hold.objects.filter(org=org.org).values_list("id", "status")),
    }


def other_marks(persona: str) -> list[str]:
    """What must never appear in an answer to this persona."""
    if persona in ("acme", "acme_reader", "revoked"):
        return [GLOBEX_MARK, str(AMOUNTS["globex"]), "777.0"]
    if persona == "globex":
        return [ACME_MARK]
    return []


@pytest.mark.parametrize("persona", PERSONAS)
@pytest.mark.parametrize("op", OPERATIONS, ids=lambda op: f"{op.method} {op.path}")
def test_each_persona_gets_what_its_role_allows_and_nothing_of_another_org(world, op, persona):
    target = world.other(persona)
    guarded = persona in ("acme", "acme_reader", "revoked", "nonstaff")  # must not reach globex's data
    call = op.call(world, persona)  # first: a call may set up what it aims at (a budget, a hold)
    before = snapshot(target) if op.writes and guarded else None

    response = send(world, persona, op)

    assert response.status_code == op.expect[persona], (persona, op.path, response.content[:400])
    text = response.content.decode(errors="replace")
    for mark in other_marks(persona):
        assert mark not in text, (persona, op.path, mark, text[:400])
    for record in target.records if guarded else ():
        if str(record.pk) not in f"{call.url} {call.body}":  # an error may quote the caller's own input
            assert str(record.pk) not in text, (persona, op.path, "another org's id")
    if before is not None:
        assert snapshot(target) == before, (persona, op.path, "another org's data changed")
    if response.status_code >= 400 and response.status_code != 404:
        assert text.strip(), "an error says why"


# --- what an org key counts and sums is its own -------------------------------------------------------


def acme_totals(world: World) -> dict[str, Any]:
    records = world.orgs["acme"].records
    return {
        "count": len(records),
        "amount": sum((r.amount for r in records), Decimal(0)),
        "tokens": sum(r.total_tokens for r in records),
        "recent": [r for r in records if r.use_time.timestamp() > time.time() - 60],
    }


@pytest.mark.parametrize("persona", ["acme", "acme_reader"])
def test_an_org_key_counts_and_sums_its_own_records_only(world, persona):
    client, mine = world.clients[persona], acme_totals(world)

    count = client.get("/api/llmusage/count/?status=success").json()
    count_all = client.get("/api/llmusage/count/").json()
    history = client.get("/api/llmusage-history/count/").json()
    stats = client.get("/api/llmusage/stats/").json()
    filtered = client.get("/api/llmusage/stats/?userorgid=globex").json()
    rates = client.get("/api/llmusage/rates/").json()
    oneuptime = client.post("/api/llm-log/count", {"query": {}}, format="json").json()
    newapi = client.get("/api/log/self").json()["data"]
    newapi_stat = client.get("/api/log/self/stat").json()["data"]
    aiproxy = client.get("/api/logs/search").json()["data"]

    assert count_all == {"count": mine["count"], "estimated": False}
    assert count["count"] == mine["count"] - 1  # one of acme's records failed
    assert history["count"] == 1
    assert stats["requests"] == mine["count"] and Decimal(stats["amount"]) == mine["amount"]
    assert stats["total_tokens"] == mine["tokens"]
    assert [m["model_name"] for m in stats["by_model"]] == [f"{ACME_MARK}-model"]
    assert filtered["requests"] == 0 and filtered["by_model"] == []
    assert rates == {"rpm": len(mine["recent"]), "tpm": sum(r.total_tokens for r in mine["recent"])}
    assert oneuptime == {"count": mine["count"]}
    assert newapi["total"] == mine["count"]
    assert newapi_stat["quota"] == quota_units(mine["amount"])  # new-api's quota units (issue 15)
    assert aiproxy["total"] == mine["count"]
    assert aiproxy["models"] == [f"{ACME_MARK}-model"]
    assert aiproxy["token_names"] == [f"{ACME_MARK}-token"]


def test_the_platform_sees_both_orgs(world):
    client = world.clients["platform"]

    listed = client.get("/api/llmusage/?page_size=100").content.decode()
    facets = client.get("/api/logs/search").json()["data"]["models"]

    assert ACME_MARK in listed and GLOBEX_MARK in listed
    assert facets == [f"{ACME_MARK}-model", f"{GLOBEX_MARK}-model"]


def test_an_org_key_cannot_page_into_another_org_with_a_cursor(world):
    """A cursor is a position, not a grant: acme following globex's cursor still reads acme's rows."""
    platform, acme = world.clients["platform"], world.clients["acme"]
    first = platform.get("/api/llmusage/?userorgid=globex&page_size=1").json()

    followed = acme.get(f"/api/llmusage/?page_size=100&cursor={first['next_cursor']}")

    assert followed.status_code == 200
    assert GLOBEX_MARK not in followed.content.decode()


def test_a_write_by_an_org_key_lands_in_its_own_org(world):
    acme = world.clients["acme"]

    created = acme.post("/api/llmusage/", {"transno": "mine", "model_name": "gpt-4o"}, format="json")

    assert created.status_code == 201
    assert LLMUsage.objects.get(transno="mine").userorgid == "acme"
    assert not LLMUsageHistory.objects.filter(transno="mine").exists()


def test_a_session_without_staff_cannot_use_the_admin_either(world):
    browser = Client()
    browser.force_login(User.objects.get(username="nonstaff"))

    assert browser.get("/admin/llmlog/llmusage/").status_code == 302  # to the login page
    assert browser.get("/admin/dashboard/").status_code == 302


# --- idempotency per tenant (issue 14) ------------------------------------------------------------------
# A transno names a call within its org: another org sending the same transno (first, to squat on it, or
# by coincidence) stores its own record, never blocks acme's, and never learns acme's record id.


def _org_record(transno: str, **fields: Any) -> dict[str, Any]:
    return {"transno": transno, "model_name": "gpt-4o", "input_tokens": 10, "output_tokens": 5, **fields}


def test_two_orgs_using_one_transno_each_store_their_own_record(world):
    acme, globex = world.clients["acme"], world.clients["globex"]

    squatted = globex.post("/api/llmusage/", _org_record("shared-1", output_tokens=99), format="json")
    mine = acme.post("/api/llmusage/", _org_record("shared-1"), format="json")
    again = acme.post("/api/llmusage/", _org_record("shared-1"), format="json")

    assert (squatted.status_code, mine.status_code, again.status_code) == (201, 201, 200)
    assert mine.json()["id"] != squatted.json()["id"]
    assert again.json()["id"] == mine.json()["id"]
    assert squatted.json()["id"] not in json.dumps([mine.json(), again.json()])
    assert set(LLMUsage.objects.filter(transno="shared-1").values_list("userorgid", flat=True)) == {
        "acme",
        "globex",
    }


def test_a_conflict_names_only_the_callers_own_record(world):
    acme, globex = world.clients["acme"], world.clients["globex"]
    acme_id = acme.post("/api/llmusage/", _org_record("shared-2"), format="json").json()["id"]
    globex_id = globex.post("/api/llmusage/", _org_record("shared-2"), format="json").json()["id"]

    conflict = globex.post("/api/llmusage/", _org_record("shared-2", output_tokens=1), format="json")

    assert conflict.status_code == 409
    assert conflict.json()["id"] == globex_id
    assert acme_id not in conflict.content.decode()


def test_another_orgs_transnos_hot_and_in_history_are_new_records_in_a_bulk(world):
    acme_transnos = [record.transno for record in world.orgs["acme"].records]
    assert any(isinstance(record, LLMUsageHistory) for record in world.orgs["acme"].records)

    response = world.clients["globex"].post(
        "/api/llmusage/", [_org_record(transno) for transno in acme_transnos], format="json"
    )

    assert response.status_code == 201, response.content
    assert response.json()["created"] == len(acme_transnos)
    assert not world.orgs["acme"].ids & {item["id"] for item in response.json()["items"]}


def test_the_gateway_adapters_key_idempotency_by_org_too(world):
    litellm_body = litellm_record(world, "globex")
    litellm_body["metadata"] = {"user_api_key_user_id": "u-1"}  # the key's org decides
    otlp = json.loads(otlp_body(world, "globex"))
    otlp["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["attributes"].pop()  # no org attribute
    for persona in ("globex", "acme"):
        client = world.clients[persona]
        assert client.post("/api/ingest/litellm/", [litellm_body], format="json").status_code == 201
        assert client.post("/v1/traces", json.dumps(otlp), content_type="application/json").status_code == 200

    stored = LLMUsage.objects.filter(transno=litellm_body["id"]).values_list("userorgid", flat=True)
    assert sorted(stored) == ["acme", "globex"]
    span = otlp["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    assert LLMUsage.objects.filter(transno=f"{span['traceId']}-{span['spanId']}").count() == 2


# --- who may state money (issue 14) ---------------------------------------------------------------


@pytest.mark.parametrize("persona", ["acme", "globex"])
def test_an_org_key_may_not_state_money_on_any_ingest_endpoint(world, persona):
    client = world.clients[persona]
    stated = litellm_record(world, persona) | {"cost": "1000000", "ownerid": "openai"}
    before = LLMUsage.objects.count()

    native = client.post("/api/llmusage/", _org_record("money-1", amount="0", cost="1000000"), format="json")
    litellm = client.post("/api/ingest/litellm/", [stated], format="json")

    assert (native.status_code, litellm.status_code) == (403, 403)
    assert "amount" in native.json()["detail"] and "cost" in native.json()["detail"]
    assert "ownerid" in litellm.json()["detail"]
    assert LLMUsage.objects.count() == before


def test_the_platform_key_may_state_money(world):
    response = world.clients["platform"].post(
        "/api/llmusage/",
        _org_record("money-2", userorgid="acme", amount="0.5", cost="0.25", ownerid="openai"),
        format="json",
    )

    assert response.status_code == 201, response.content
    record = LLMUsage.objects.get(transno="money-2")
    assert (record.userorgid, record.amount, record.cost, record.ownerid) == (
        "acme",
        Decimal("0.5"),
        Decimal("0.25"),
        "openai",
    )
