"""The operator's first hour (issue 16): `make run`'s login and key survive a restart, `/` and `/healthz`
answer, unknown API paths are JSON whatever DEBUG is, and logs are JSON lines only."""

import functools
import io
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from django.core.management import call_command
from django.test import Client

from config.celery import app as celery_app
from llmlog.keys import _recent, api_key_lookup
from llmlog.management.commands.prepare_run import credentials_path
from llmlog.models import LLMUsage
from tests.servers import free_port

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def var_dir(tmp_path, settings) -> Path:
    settings.VAR_DIR = tmp_path
    return tmp_path


def prepare_run(*args: str) -> dict[str, str]:
    out = io.StringIO()
    call_command("prepare_run", "--demo-rows", "0", *args, stdout=out)
    text = out.getvalue()
    key = text.strip().splitlines()[-1].rsplit(" ", 1)[-1]
    password = text.split("password ", 1)[1].split()[0]
    return {"key": key, "password": password, "text": text}


def key_works(raw: str) -> bool:
    _recent.clear()  # the lookup cache would hide a revocation made a moment ago
    key = api_key_lookup(raw)
    return key is not None and key.revoked_at is None


def test_prepare_run_prints_the_same_login_and_key_at_each_start(db, var_dir, django_user_model) -> None:
    first = prepare_run()
    second = prepare_run()
    third = prepare_run()

    assert first["key"].startswith("llk_")
    assert second["key"] == third["key"] == first["key"]
    assert second["password"] == first["password"]
    assert key_works(first["key"])
    assert django_user_model.objects.get(username="admin").check_password(first["password"])
    assert "kept from" in second["text"]
    saved = credentials_path()
    assert saved.parent == var_dir
    assert oct(saved.stat().st_mode & 0o777) == "0o600"


def test_prepare_run_reset_makes_a_new_key_and_revokes_the_old(db, var_dir, django_user_model) -> None:
    first = prepare_run()
    fresh = prepare_run("--reset")

    assert fresh["key"] != first["key"]
    assert fresh["password"] != first["password"]
    assert not key_works(first["key"])
    assert key_works(fresh["key"])
    assert prepare_run()["key"] == fresh["key"]


def test_prepare_run_replaces_a_saved_key_that_no_longer_works(db, var_dir) -> None:
    first = prepare_run()
    # A file left from another database: its key is unknown here.
    saved = json.loads(credentials_path().read_text())
    credentials_path().write_text(json.dumps({**saved, "api_key": "llk_notakeyofthisdatabase"}))

    again = prepare_run()

    assert again["key"] not in (first["key"], "llk_notakeyofthisdatabase")
    assert key_works(again["key"])


def test_home_page_links_the_admin_the_api_docs_and_health(db) -> None:
    response = Client().get("/")

    assert response.status_code == 200
    for href in ('href="/admin/"', 'href="/api/docs/"', 'href="/healthz"'):
        assert href in response.content.decode()


def test_healthz_answers_ok_when_database_and_broker_answer(db) -> None:
    response = Client().get("/healthz")

    assert response.status_code == 200
    assert response.json() == {"database": "ok", "broker": "ok"}


def test_healthz_names_the_broker_when_it_does_not_answer(db, monkeypatch) -> None:
    # The broker URL pointed at a closed port, for this app's connections only (the app's settings are
    # left alone: its pools would keep the dead URL for the tests after this one). A free port is closed
    # again once found: nothing listens there.
    closed = f"redis://127.0.0.1:{free_port()}/0"
    monkeypatch.setattr(
        celery_app, "connection_for_write", functools.partial(celery_app.connection_for_write, url=closed)
    )

    response = Client().get("/healthz")

    assert response.status_code == 503
    body = response.json()
    assert body["database"] == "ok"
    assert body["broker"].startswith("error")
    assert "broker" in body["detail"]


@pytest.mark.parametrize("debug", [True, False])
def test_unknown_api_path_answers_json_404_whatever_debug_is(db, settings, debug) -> None:
    settings.DEBUG = debug

    for path in ("/api/no-such-thing/", "/api/llmusage/x/y/z/", "/v1/metrics"):
        response = Client().get(path)
        assert response.status_code == 404, path
        assert response["Content-Type"] == "application/json"
        assert response.json() == {"detail": f"No such endpoint: {path}"}


@pytest.mark.parametrize("method", ["post", "patch", "put", "delete"])
def test_a_write_to_an_unknown_api_path_is_a_json_404_not_a_csrf_page(db, method) -> None:
    # enforce_csrf_checks: as a browser session or a client without a key would meet it
    client = Client(enforce_csrf_checks=True)

    response = getattr(client, method)("/api/no-such-thing/", data="{}", content_type="application/json")

    assert response.status_code == 404
    assert response.json() == {"detail": "No such endpoint: /api/no-such-thing/"}


def test_api_route_without_its_slash_is_still_redirected(db) -> None:
    response = Client().get("/api/schema?format=json")

    assert response.status_code == 301
    assert response["Location"] == "/api/schema/?format=json"


LOGGING_PROBE = """
import django
django.setup()
from django.test import Client
from django.test.utils import setup_test_environment
setup_test_environment()
client = Client()
client.get("/no-such-page/")
client.get("/api/no-such-thing/")
client.get("/api/llmusage/")
"""


def test_a_4xx_under_debug_logs_json_lines_only(tmp_path) -> None:
    """Under DEBUG (make run), Django's own `django` handler printed each 4xx a second time, as text."""
    env = dict(
        os.environ,
        DJANGO_SETTINGS_MODULE="tests.settings",
        DJANGO_DEBUG="true",
        LLMLOG_VAR_DIR=str(tmp_path),
        DATABASE_URL=f"sqlite:///{tmp_path / 'probe.sqlite3'}",
    )
    env.pop("REDIS_URL", None)
    done = subprocess.run(
        [sys.executable, "-c", LOGGING_PROBE], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )

    assert done.returncode == 0, done.stderr
    lines = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    assert len(lines) >= 3
    entries = [json.loads(line) for line in lines]  # fails on any plain-text line
    statuses = [entry.get("status") for entry in entries if entry["logger"] == "llmlog.request"]
    assert statuses == [404, 404, 401]


def otlp_span(*, resource_org: str | None, span_org: str | None) -> bytes:
    attributes = [
        {"key": "gen_ai.request.model", "value": {"stringValue": "gpt-4o"}},
        {"key": "gen_ai.usage.input_tokens", "value": {"intValue": "42"}},
    ]
    if span_org:
        attributes.append({"key": "metadata.user_api_key_org_id", "value": {"stringValue": span_org}})
    resource = [{"key": "service.name", "value": {"stringValue": "support-bot"}}]
    if resource_org:
        resource.append({"key": "llmlog.userorgid", "value": {"stringValue": resource_org}})
    span = {
        "traceId": uuid.uuid4().hex,
        "spanId": uuid.uuid4().hex[:16],
        "name": "chat gpt-4o",
        "startTimeUnixNano": str(time.time_ns() - 2_000_000_000),
        "endTimeUnixNano": str(time.time_ns()),
        "attributes": attributes,
    }
    body = {"resourceSpans": [{"resource": {"attributes": resource}, "scopeSpans": [{"spans": [span]}]}]}
    return json.dumps(body).encode()


@pytest.mark.parametrize(
    ("resource_org", "span_org", "expected"),
    [("org-01", None, "org-01"), ("org-01", "org-02", "org-02"), (None, None, "")],
)
def test_an_otel_span_takes_its_org_from_the_resource_attribute_the_readme_names(
    api, platform_key, resource_org, span_org, expected
) -> None:
    response = api.post(
        "/v1/traces",
        data=otlp_span(resource_org=resource_org, span_org=span_org),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {platform_key}",
    )

    assert response.status_code == 200, response.content
    assert LLMUsage.objects.get().userorgid == expected
    assert "llmlog.userorgid" in (ROOT / "README.md").read_text()
