import itertools
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth.models import Permission
from django.db import connection
from django.test import Client
from rest_framework.test import APIClient

from config.celery import app
from llmlog.keys import api_key_create
from tests.clickhouse_server import clickhouse_server
from tests.servers import celery_worker


def pytest_collection_modifyitems(config, items) -> None:
    """Tests marked `postgres` exercise PostgreSQL itself (COPY, row locks); the SQLite run skips them."""
    if connection.vendor == "postgresql":
        return
    skip = pytest.mark.skip(reason="PostgreSQL-only behaviour; runs in the PostgreSQL pass of CI")
    for item in items:
        if "postgres" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def clickhouse_server_url() -> Iterator[str]:
    """A ClickHouse server of the test session's own (tests/clickhouse_server.py), under the var dir."""
    with clickhouse_server(Path(settings.VAR_DIR) / "clickhouse-test") as url:
        yield url


@pytest.fixture
def api() -> APIClient:
    return APIClient()


@pytest.fixture
def make_key(db) -> Callable[..., str]:
    def make(*, org: str = "acme", role: str = "member", scopes: tuple[str, ...] = ("ingest", "read")) -> str:
        _, raw = api_key_create(userorgid=org, role=role, scopes=scopes)
        return raw

    return make


# Personas: acme's gateway (ingest + read), acme's dashboard (read only), globex (an outsider org),
# and the platform itself.
@pytest.fixture
def acme_key(make_key) -> str:
    return make_key(org="acme")


@pytest.fixture
def acme_reader_key(make_key) -> str:
    return make_key(org="acme", role="reader", scopes=("read",))


@pytest.fixture
def globex_key(make_key) -> str:
    return make_key(org="globex")


@pytest.fixture
def platform_key(make_key) -> str:
    return make_key(org="", role="admin")


@pytest.fixture
def make_staff(django_user_model) -> Callable[..., Any]:
    """A staff user holding exactly the Django permissions named ("llmlog.view_llmusage"): a staff session
    obeys them on every API operation (llmlog.api.auth.HasScope), so a test grants what it uses."""

    def make(name: str = "staff", *, perms: tuple[str, ...] = ()) -> Any:
        user = django_user_model.objects.create_user(name, password="x", is_staff=True)
        for perm in perms:
            app_label, codename = perm.split(".")
            user.user_permissions.add(
                Permission.objects.get(content_type__app_label=app_label, codename=codename)
            )
        return user

    return make


@pytest.fixture
def staff_session(make_staff) -> Callable[..., Client]:
    """An admin session (a logged-in test client) of a new staff user holding exactly the permissions
    named ("accounting.view_account"), for what each admin page shows or refuses."""
    made = itertools.count(1)

    def login(*perms: str) -> Client:
        client = Client()
        client.force_login(make_staff(f"staff-{next(made)}", perms=perms))
        return client

    return login


def bearer(raw: str) -> dict[str, str]:
    return {"HTTP_AUTHORIZATION": f"Bearer {raw}"}


@pytest.fixture
def celery_worker_process(transactional_db, tmp_path):
    """A real Celery worker in its own process, on the test database and the configured broker
    (Redis when REDIS_URL is set, the embedded filesystem broker otherwise)."""
    app.control.purge()
    with celery_worker(tmp_path) as process:
        yield process
