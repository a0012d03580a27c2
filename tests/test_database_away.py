"""The JSON 503 while the database cannot be reached, without root: gunicorn started on a database URL
nothing answers (a closed port on PostgreSQL, a file that cannot be opened on SQLite), so every
connection attempt really fails. tests/test_faults.py restarts a real PostgreSQL under load (root only)."""

import http.client
import json
import time

import pytest
from django.db import connection

from tests.servers import free_port, gunicorn_server

pytestmark = pytest.mark.django_db

# A hang guard: a refused connection answers at once; only a request stuck on the database waits this long.
HANG_SECONDS = 20


def unreachable_database_url(tmp_path) -> str:
    if connection.vendor == "postgresql":
        return f"postgres://postgres@127.0.0.1:{free_port()}/llmlog"  # nothing listens there
    return f"sqlite:///{tmp_path}/no-such-directory/llmlog.sqlite3"


def call(
    port: int, method: str, path: str, body: object | None = None
) -> tuple[int, dict, str | None, float]:
    """(status, JSON body, Retry-After, seconds taken) of one request with a key only a database knows."""
    client = http.client.HTTPConnection("127.0.0.1", port, timeout=HANG_SECONDS)
    headers = {"Authorization": "Bearer llk_known-to-the-database", "Content-Type": "application/json"}
    started = time.monotonic()
    client.request(method, path, body=None if body is None else json.dumps(body), headers=headers)
    response = client.getresponse()
    answer = response.read()
    took = time.monotonic() - started
    client.close()
    return response.status, json.loads(answer), response.getheader("Retry-After"), took


def test_the_api_answers_a_json_503_with_retry_after_while_the_database_is_away(tmp_path):
    record = {"transno": "away-1", "userorgid": "acme", "model_name": "gpt-4o", "amount": "0.01000"}
    with gunicorn_server(tmp_path, env={"DATABASE_URL": unreachable_database_url(tmp_path)}) as port:
        answers = {
            "ingest": call(port, "POST", "/api/llmusage/", record),
            "list": call(port, "GET", "/api/llmusage/"),
            "new-api": call(port, "GET", "/api/log/self"),
        }
        health = call(port, "GET", "/healthz")

    for name, (status, body, retry_after, took) in answers.items():
        assert status == 503, (name, status, body)
        # Each in its own envelope: the native API's `detail`, new-api's `success`/`message`.
        message = body["message"] if name == "new-api" else body["detail"]
        assert "database is unavailable" in message, (name, body)
        assert retry_after == "5", name
        assert took < HANG_SECONDS, name
    status, body, _, _ = health
    assert status == 503 and body["database"] == "error: OperationalError", body
    assert answers["new-api"][1]["success"] is False
