"""Staff sessions obey Django permissions on every API operation (and /metrics).

The operations are the tenancy matrix's (tests/test_tenancy.py), so an operation added there must be
placed here too (`test_every_operation_names_its_permission`). Four staff personas call each one:

- `nobody`: staff, no permission at all: 403 everywhere (the gateway key's own /api/log/token aside);
- `holder`: staff with exactly the permission the operation needs: what a platform admin gets;
- `all_but`: staff with every permission of the API except that one: 403 naming the permission;
- `root`: a superuser without a single explicit permission: what a platform admin gets.
"""

from collections.abc import Iterable

import pytest
from django.contrib.auth.models import Permission, User
from rest_framework.test import APIClient

from tests.hardening import seed_orgs
from tests.test_tenancy import OPERATIONS, STAFF_PERMISSIONS, World, send

pytestmark = pytest.mark.django_db

VIEW_USAGE = "llmlog.view_llmusage"
# What each operation asks of a staff session; None: it asks nothing of anyone (the key is the credential).
NEEDED: dict[tuple[str, str], str | None] = {
    ("GET", "/api/llmusage/"): VIEW_USAGE,
    ("POST", "/api/llmusage/"): "llmlog.add_llmusage",
    ("GET", "/api/llmusage/{id}/"): VIEW_USAGE,
    ("PATCH", "/api/llmusage/{id}/"): "llmlog.change_llmusage",
    ("DELETE", "/api/llmusage/{id}/"): "llmlog.delete_llmusage",
    ("GET", "/api/llmusage/count/"): VIEW_USAGE,
    ("GET", "/api/llmusage/search/"): VIEW_USAGE,
    ("GET", "/api/llmusage/stats/"): VIEW_USAGE,
    ("GET", "/api/llmusage/rates/"): VIEW_USAGE,
    ("GET", "/api/llmusage-history/"): "llmlog.view_llmusagehistory",
    ("GET", "/api/llmusage-history/{id}/"): "llmlog.view_llmusagehistory",
    ("GET", "/api/llmusage-history/count/"): "llmlog.view_llmusagehistory",
    ("GET", "/api/accounting-failures/"): "accounting.view_accountingfailure",
    ("GET", "/api/accounting-failures/{id}/"): "accounting.view_accountingfailure",
    ("POST", "/api/accounting-failures/{id}/retry/"): "accounting.change_accountingfailure",
    ("POST", "/api/accounting-failures/retry/"): "accounting.change_accountingfailure",
    ("POST", "/api/accounting-failures/{id}/resolve/"): "accounting.change_accountingfailure",
    ("POST", "/api/accounting-failures/{id}/ignore/"): "accounting.change_accountingfailure",
    ("GET", "/api/accounts/"): "accounting.view_account",
    ("POST", "/api/accounts/"): "accounting.add_account",
    ("GET", "/api/accounts/{org}/"): "accounting.view_account",
    ("PATCH", "/api/accounts/{org}/"): "accounting.change_account",
    ("GET", "/api/accounts/{org}/lines/"): "accounting.view_account",
    ("POST", "/api/accounts/{org}/topup/"): "accounting.change_account",
    ("GET", "/api/accounts/{org}/statements/"): "accounting.view_statement",
    ("GET", "/api/accounts/{org}/statements/{month}/"): "accounting.view_statement",
    ("GET", "/api/budgets/"): "accounting.view_budget",
    ("POST", "/api/budgets/"): "accounting.add_budget",
    ("GET", "/api/budgets/{id}/"): "accounting.view_budget",
    ("PATCH", "/api/budgets/{id}/"): "accounting.change_budget",
    ("DELETE", "/api/budgets/{id}/"): "accounting.delete_budget",
    ("GET", "/api/holds/"): "accounting.view_hold",
    ("POST", "/api/holds/"): "accounting.add_hold",
    ("GET", "/api/holds/{id}/"): "accounting.view_hold",
    ("DELETE", "/api/holds/{id}/"): "accounting.delete_hold",
    ("GET", "/api/repricings/"): "accounting.view_repricing",
    ("POST", "/api/repricings/"): "accounting.add_repricing",
    ("GET", "/api/repricings/{id}/"): "accounting.view_repricing",
    ("POST", "/api/repricings/{id}/apply/"): "accounting.change_repricing",
    ("GET", "/api/repricings/{id}/records.csv/"): "accounting.view_repricing",
    ("POST", "/api/ingest/litellm/"): "llmlog.add_llmusage",
    ("GET", "/api/exports/focus/"): VIEW_USAGE,
    ("GET", "/api/llmusage/cost-drift/"): VIEW_USAGE,
    ("POST", "/api/ingest/otlp/v1/traces"): "llmlog.add_llmusage",
    ("POST", "/v1/traces"): "llmlog.add_llmusage",
    ("GET", "/api/llm-log/{id}/get-item"): VIEW_USAGE,
    ("POST", "/api/llm-log/{id}/get-item"): VIEW_USAGE,
    ("POST", "/api/llm-log/count"): VIEW_USAGE,
    ("GET", "/api/llm-log/get-list"): VIEW_USAGE,
    ("POST", "/api/llm-log/get-list"): VIEW_USAGE,
    ("GET", "/api/log/"): VIEW_USAGE,
    ("DELETE", "/api/log/"): "llmlog.delete_llmusage",
    ("GET", "/api/log/self"): VIEW_USAGE,
    ("GET", "/api/log/self/stat"): VIEW_USAGE,
    ("GET", "/api/log/self/search"): VIEW_USAGE,
    ("GET", "/api/log/stat"): VIEW_USAGE,
    ("GET", "/api/log/search"): VIEW_USAGE,
    ("GET", "/api/log/token"): None,
    ("GET", "/api/logs/search"): VIEW_USAGE,
    ("GET", "/api/log/{group}/search"): VIEW_USAGE,
    ("GET", "/metrics"): VIEW_USAGE,
}


def permissions(names: Iterable[str]) -> list[Permission]:
    wanted = {tuple(name.split(".")) for name in names}
    return [
        p
        for p in Permission.objects.select_related("content_type").filter(
            codename__in=[codename for _, codename in wanted]
        )
        if (p.content_type.app_label, p.codename) in wanted
    ]


def every_api_permission() -> set[str]:
    return {f"{p.content_type.app_label}.{p.codename}" for p in permissions_by_codename(STAFF_PERMISSIONS)}


def permissions_by_codename(codenames: Iterable[str]) -> list[Permission]:
    return list(
        Permission.objects.select_related("content_type").filter(
            codename__in=list(codenames), content_type__app_label__in=("llmlog", "accounting")
        )
    )


def session(*, name: str, perms: Iterable[str] = (), superuser: bool = False) -> APIClient:
    user = User.objects.create_user(name, password="x", is_staff=True, is_superuser=superuser)
    user.user_permissions.set(permissions(perms))
    client = APIClient()
    client.force_login(user)
    return client


def world_with(client: APIClient) -> World:
    world = World(orgs=seed_orgs())
    world.clients["staff"] = client
    return world


def test_every_operation_names_its_permission():
    assert {(op.method, op.path) for op in OPERATIONS} == set(NEEDED)
    assert {name for name in NEEDED.values() if name} <= every_api_permission()


@pytest.fixture(autouse=True)
def _no_ingest_limit(settings) -> None:
    settings.LLMLOG_INGEST_RATE = None


@pytest.mark.parametrize("op", OPERATIONS, ids=lambda op: f"{op.method} {op.path}")
def test_staff_without_any_permission_is_refused(op):
    world = world_with(session(name="nobody"))

    response = send(world, "staff", op)

    expected = 200 if NEEDED[(op.method, op.path)] is None else 403
    assert response.status_code == expected, response.content[:300]


@pytest.mark.parametrize("op", OPERATIONS, ids=lambda op: f"{op.method} {op.path}")
def test_staff_with_the_permission_the_operation_needs_may_call_it(op):
    needed = NEEDED[(op.method, op.path)]
    world = world_with(session(name="holder", perms=[needed] if needed else []))

    response = send(world, "staff", op)

    assert response.status_code == op.expect["staff"], response.content[:300]


@pytest.mark.parametrize(
    "op",
    [op for op in OPERATIONS if NEEDED[(op.method, op.path)]],
    ids=lambda op: f"{op.method} {op.path}",
)
def test_staff_with_every_other_permission_is_refused_naming_the_one_missing(op):
    needed = NEEDED[(op.method, op.path)]
    world = world_with(session(name="all_but", perms=every_api_permission() - {needed}))

    response = send(world, "staff", op)

    assert response.status_code == 403, response.content[:300]
    assert needed in response.content.decode()


@pytest.mark.parametrize("op", OPERATIONS, ids=lambda op: f"{op.method} {op.path}")
def test_a_superuser_has_every_permission(op):
    world = world_with(session(name="root", superuser=True))

    response = send(world, "staff", op)

    assert response.status_code == op.expect["staff"], response.content[:300]
