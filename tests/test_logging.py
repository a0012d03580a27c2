"""Logs are JSON lines carrying the request id, which is returned on the response."""

import io
import json
import logging
import re

import pytest
from django.conf import settings

from llmlog.logging import JsonFormatter, mask_secrets
from tests.conftest import bearer
from tests.factories import org_payload


@pytest.fixture
def json_lines():
    """What the configured formatter writes, line by line, parsed (a handler on the root logger)."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.addHandler(handler)

    def lines() -> list[dict]:
        return [json.loads(line) for line in stream.getvalue().splitlines()]

    yield lines
    root.removeHandler(handler)


def test_settings_log_json_through_the_formatter():
    assert settings.LOGGING["formatters"]["json"]["()"] == "llmlog.logging.JsonFormatter"
    assert settings.LOGGING["handlers"]["console"]["formatter"] == "json"
    assert any(isinstance(h.formatter, JsonFormatter) for h in logging.getLogger().handlers)
    assert settings.MIDDLEWARE[0] == "llmlog.logging.RequestIdMiddleware"


def test_sql_with_its_parameters_is_never_logged_even_at_debug():
    logging.getLogger().setLevel(logging.DEBUG)
    try:
        assert not logging.getLogger("django.db.backends").isEnabledFor(logging.DEBUG)
    finally:
        logging.getLogger().setLevel(logging.INFO)


def test_a_line_is_one_json_object_with_the_standard_fields(json_lines):
    logging.getLogger("llmlog.test").warning("disk %s%% full", 93, extra={"volume": "/var", "free_gb": 1.5})

    (line,) = json_lines()
    assert line["level"] == "WARNING"
    assert line["logger"] == "llmlog.test"
    assert line["message"] == "disk 93% full"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00", line["time"])
    assert (line["volume"], line["free_gb"]) == ("/var", 1.5)
    assert line["request_id"] is None  # outside a request


def test_exceptions_are_one_line_with_the_traceback_inside(json_lines):
    try:
        raise ValueError("boom")
    except ValueError:
        logging.getLogger("llmlog.test").exception("failed")

    (line,) = json_lines()
    assert "ValueError: boom" in line["exc_info"]


def test_objects_and_secret_named_extras_are_never_written(json_lines):
    class Request:
        def __repr__(self) -> str:
            return "<Request with body SECRET-BODY>"

    logging.getLogger("llmlog.test").info(
        "ingest", extra={"request": Request(), "body": "SECRET-BODY", "token_key": "sk-SECRET", "n": 3}
    )

    (line,) = json_lines()
    assert "SECRET" not in json.dumps(line)
    assert line["n"] == 3


@pytest.mark.parametrize(
    ("text", "leaked"),
    [
        ("auth with llk_AbCdEf123_-xyz failed", "llk_AbCdEf123_-xyz"),
        ("header Authorization: Bearer sk-live-123456", "sk-live-123456"),
        ("ApiKey: llk_zzzzzzzzzz", "zzzzzzzzzz"),
    ],
)
def test_anything_shaped_like_a_key_is_masked(json_lines, text, leaked):
    logging.getLogger("llmlog.test").error(text)

    assert leaked not in json.dumps(json_lines())
    assert leaked not in mask_secrets(text)


# --- the request id -------------------------------------------------------------------------------


@pytest.mark.django_db
def test_request_id_from_the_caller_is_returned_and_on_every_line(client, acme_key, json_lines):
    response = client.get("/api/llmusage/does-not-parse/", HTTP_X_REQUEST_ID="gw-7f3a.1", **bearer(acme_key))

    assert response.status_code == 400
    assert response["X-Request-ID"] == "gw-7f3a.1"
    lines = json_lines()
    assert {line["logger"] for line in lines} >= {"llmlog.request", "django.request"}
    assert {line["request_id"] for line in lines} == {"gw-7f3a.1"}


@pytest.mark.django_db
def test_request_id_is_made_when_absent_and_differs_per_request(client, db):
    first = client.get("/api/schema/")["X-Request-ID"]
    second = client.get("/api/schema/")["X-Request-ID"]

    assert re.fullmatch(r"[0-9a-f]{32}", first)
    assert first != second


@pytest.mark.django_db
@pytest.mark.parametrize(
    "hostile", ['x"}\n{"level": "CRITICAL', "a" * 129, "id with spaces", "<script>", "ü-id"]
)
def test_request_id_that_is_not_an_id_is_replaced(client, hostile, json_lines):
    response = client.get("/api/schema/", HTTP_X_REQUEST_ID=hostile)

    assert re.fullmatch(r"[0-9a-f]{32}", response["X-Request-ID"])
    assert all(line["request_id"] == response["X-Request-ID"] for line in json_lines())


@pytest.mark.django_db
def test_access_line_has_status_duration_key_and_no_query_string(client, acme_key, json_lines):
    from llmlog.models import ApiKey

    response = client.post(
        "/api/llmusage/?key=sk-in-the-query",
        org_payload(),
        content_type="application/json",
        HTTP_X_REQUEST_ID="req-1",
        **bearer(acme_key),
    )

    assert response.status_code == 201
    (access,) = [line for line in json_lines() if line["logger"] == "llmlog.request"]
    assert access["method"] == "POST"
    assert access["path"] == "/api/llmusage/"
    assert access["status"] == 201
    assert access["duration_ms"] > 0
    assert access["api_key_id"] == ApiKey.objects.get().pk
    assert "sk-in-the-query" not in json.dumps(access)
