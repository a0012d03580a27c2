"""The PostgreSQL backend's health check: no round trip, and a connection the server ended is dropped."""

import time

import psycopg
import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from llmlog.models import ApiKey

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


def _server_ended(pid: int) -> None:
    """End the backend `pid` from another connection, as a restart or an operator would."""
    settings = connection.settings_dict
    with psycopg.connect(
        host=settings["HOST"],
        port=settings["PORT"] or 5432,
        user=settings["USER"],
        dbname=settings["NAME"],
        autocommit=True,
    ) as other:
        other.execute("SELECT pg_terminate_backend(%s)", [pid])


def test_a_live_connection_is_usable_without_a_query():
    connection.ensure_connection()
    with CaptureQueriesContext(connection) as queries:
        assert connection.is_usable()
    assert len(queries) == 0


def test_a_connection_the_server_ended_is_unusable_and_replaced():
    connection.ensure_connection()
    old_pid = connection.connection.info.backend_pid
    _server_ended(old_pid)
    deadline = time.monotonic() + 5
    while connection.is_usable() and time.monotonic() < deadline:  # the FATAL notice is on its way
        time.sleep(0.01)
    assert not connection.is_usable()

    # What Django does at the start of a request with CONN_HEALTH_CHECKS: the next query just works.
    connection.health_check_done = False
    connection.close_if_health_check_failed()
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        (new_pid,) = cursor.fetchone()
    assert new_pid != old_pid
    assert connection.connection.info.backend_pid == new_pid
    assert ApiKey.objects.count() == 0  # the ORM answers on the new connection too (the table is empty)


def test_a_closed_connection_is_unusable():
    connection.ensure_connection()
    connection.connection.close()
    assert not connection.is_usable()
    connection.close()
