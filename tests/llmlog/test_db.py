"""llmlog.db: the hottest statements are prepared on Django's connection, and settings can turn it off."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.db import connection

from llmlog.db import bound_cursor
from llmlog.queries import UsageQuery
from llmlog.selectors.rows import usage_record_values
from llmlog.selectors.stats import usage_rates
from tests.conftest import bearer
from tests.factories import QUERY_RECORD, make_usage

ROOT = Path(__file__).resolve().parents[2]


def prepared_statements() -> dict[str, int]:
    """statement text -> generic plans used, on this connection."""
    with bound_cursor() as cursor:
        cursor.execute("SELECT statement, generic_plans FROM pg_prepared_statements")
        return dict(cursor.fetchall())


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_get_item_rates_and_pages_are_prepared_and_searches_are_not(api, acme_key):
    connection.close()  # a new connection: no statement prepared by another test
    record = make_usage(QUERY_RECORD, transno="one")
    for _ in range(7):
        usage_record_values(org="acme", id=record.pk)
        usage_rates(query=UsageQuery(org="acme"))
        assert api.get("/api/llmusage/", **bearer(acme_key)).json()["results"][0]["transno"] == "one"
        assert api.get("/api/llmusage/search/", {"keyword": "one"}, **bearer(acme_key)).status_code == 200

    prepared = prepared_statements()

    item = next(text for text in prepared if "WHERE id = $1 AND userorgid = $2" in text)
    assert prepared[item] >= 1  # after five runs PostgreSQL keeps a generic plan: no more planning
    assert any("count(*), sum(total_tokens) FROM llmusage WHERE" in text for text in prepared)
    assert any('ORDER BY "llmusage_all"."use_time" DESC' in text for text in prepared)
    assert not any("LIKE" in text for text in prepared)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_prepared_statements_can_be_turned_off():
    connection.close()
    connection.settings_dict["OPTIONS"]["prepare_threshold"] = None
    try:
        record = make_usage(QUERY_RECORD)
        for _ in range(7):
            usage_record_values(id=record.pk)

        assert prepared_statements() == {}
    finally:
        connection.close()
        connection.settings_dict["OPTIONS"]["prepare_threshold"] = 5


def configured(**environment: str) -> dict:
    """What config.settings makes of these variables, read in a fresh interpreter."""
    code = (
        "import json; from config import settings as s; "
        "print(json.dumps({'cache': s.CACHES['default'].get('LOCATION'), "
        "'prepare': s.DATABASES['default'].get('OPTIONS', {}).get('prepare_threshold', 'unset')}))"
    )
    env = {
        "PATH": os.environ["PATH"],
        "DJANGO_SECRET_KEY": "settings-test",
        "LLMLOG_VAR_DIR": os.environ.get("LLMLOG_VAR_DIR", str(ROOT / "var")),
        **environment,
    }
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_postgresql_prepares_unless_told_not_to_and_sqlite_never_does():
    url = "postgres://postgres@127.0.0.1:5432/llmlog"

    assert configured(DATABASE_URL=url)["prepare"] == 5
    assert configured(DATABASE_URL=url, DATABASE_PREPARED_STATEMENTS="false")["prepare"] is None
    assert configured()["prepare"] == "unset"


def test_the_cache_takes_its_own_redis_database_when_given_one():
    broker = "redis://127.0.0.1:6379/0"

    assert configured(REDIS_URL=broker)["cache"] == broker
    assert configured(REDIS_URL=broker, CACHE_REDIS_URL="redis://127.0.0.1:6379/1")["cache"] == (
        "redis://127.0.0.1:6379/1"
    )
