"""Read replicas on a real streaming replica: where each read goes, lag, and a replica stopped under load.

PostgreSQL only (`postgres` marker; the SQLite pass skips them, as replicas are PostgreSQL's). The
replica must stream from a primary, and the machine's shared cluster is not one to copy (it holds every
other run's databases, whatever their size, and does not allow replication connections). So the module
makes a pair of its own (tests.pgclusters): a primary cluster, `llmlog_replicas`, created once and
migrated, and a streaming replica of it made with pg_basebackup for this run and removed after it. Each
test points Django's default alias at that primary and adds `replica1` for the replica, as
DATABASE_REPLICA_URLS would (the settings test below checks that parsing), then puts everything back, so
pytest-django's own test database is untouched.
"""

import json
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import suppress
from dataclasses import dataclass

import psycopg
import pytest
from django.core.management import call_command
from django.db import connections
from django.test import Client
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from llmlog.keys import api_key_create
from llmlog.replicas import (
    PRIMARY,
    ReplicaState,
    _lag,
    forget_replica_states,
    read_alias,
    replica_statuses,
)
from tests.factories import usage_payload
from tests.pgclusters import (
    ROOT,
    Standby,
    cannot_make_clusters,
    cluster_create,
    cluster_ctl,
    cluster_running,
    database_create,
    manage,
    wait_until_streaming,
)

PRIMARY_CLUSTER = "llmlog_replicas"
DATABASE = "llmlog_replicas"
METRICS_TOKEN = "replica-metrics-token"
REPLICA = "replica1"


def psycopg_url(url: str) -> str:
    return url.replace("postgres://", "postgresql://", 1)


@dataclass
class Replication:
    primary_url: str
    primary_port: int
    standby: Standby

    @property
    def standby_url(self) -> str:
        return self.standby.url(DATABASE)

    def caught_up(self) -> None:
        wait_until_streaming(
            primary_url=psycopg_url(self.primary_url), standby_url=psycopg_url(self.standby_url)
        )

    def replay(self, action: str) -> None:
        """pg_wal_replay_pause / pg_wal_replay_resume on the replica."""
        with psycopg.connect(psycopg_url(self.standby_url), autocommit=True) as standby:
            standby.execute(f"SELECT pg_wal_replay_{action}()")


@pytest.fixture(scope="module")
def replication(django_db_setup) -> Iterator[Replication]:
    """The pair, made after pytest-django's test databases (django_db_setup): made before, `replica1`
    would be taken for a test mirror and pointed at the test database."""
    if reason := cannot_make_clusters():
        pytest.skip(reason)
    port = cluster_create(PRIMARY_CLUSTER)
    if isinstance(port, str):
        pytest.skip(port)
    if not cluster_running(PRIMARY_CLUSTER):
        cluster_ctl(PRIMARY_CLUSTER, "start")
    standby = Standby(primary_port=port)
    try:
        url = database_create(port, DATABASE)
        manage("migrate", "--no-input", database_url=url)
        standby.create()
        replication = Replication(primary_url=url, primary_port=port, standby=standby)
        replication.caught_up()
        # Declared before any test starts, so that the tests may name it (django_db(databases=...)); a
        # mirror of default to Django's test machinery, which then never flushes it (read-only anyway).
        default = connections.settings["default"]
        connections.settings[REPLICA] = {
            **default,
            "HOST": "127.0.0.1",
            "PORT": standby.port,
            "NAME": DATABASE,
            "USER": "postgres",
            "OPTIONS": {**default["OPTIONS"], "connect_timeout": 2},
            "TEST": {**default["TEST"], "MIRROR": "default"},
        }
        yield replication
    finally:
        connections.settings.pop(REPLICA, None)
        with suppress(AttributeError):  # never opened in this thread
            del connections[REPLICA]
        standby.drop()
        cluster_ctl(PRIMARY_CLUSTER, "stop", "-m", "fast")


# Each test on the pair may use pytest-django's test database and the replica (`replication` declares it).
on_the_pair = pytest.mark.django_db(transaction=True, databases=["default", "replica1"])


@pytest.fixture
def on_replica(replication, settings) -> Iterator[Replication]:
    """Django's default alias on the pair's primary (emptied) beside `replica1`, its streaming replica;
    restored after, before pytest-django flushes its own test database."""
    default = connections["default"]
    saved = dict(default.settings_dict)
    connections.close_all()
    # The same dict object every thread's connection is built from: threads reach the primary too.
    default.settings_dict.update(
        HOST="127.0.0.1", PORT=replication.primary_port, NAME=DATABASE, USER="postgres"
    )
    settings.LLMLOG_REPLICA_ALIASES = [REPLICA]
    settings.LLMLOG_REPLICA_MAX_LAG_SECONDS = 5
    settings.LLMLOG_METRICS_TOKEN = METRICS_TOKEN
    forget_replica_states()
    try:
        call_command("flush", interactive=False, verbosity=0)
        if not replication.standby.running():  # left stopped by a test that failed before restarting it
            replication.standby.start()
        replication.replay("resume")
        replication.caught_up()
        yield replication
    finally:
        # Django's default alias first: a test that failed with the replica stopped must not leave the
        # rest of the session on this primary, which the module fixture stops.
        connections.close_all()
        default.settings_dict.clear()
        default.settings_dict.update(saved)
        forget_replica_states()
        if replication.standby.running():
            replication.replay("resume")


def client_for(raw_key: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw_key}")
    return client


def platform_key() -> str:
    return api_key_create(userorgid="", role="admin", scopes=("ingest", "read"))[1]


def usage_queries(context: CaptureQueriesContext) -> list[str]:
    """The statements that read usage records or their rollups (not the failed postings' table)."""
    return [
        sql
        for sql in (query["sql"] for query in context.captured_queries)
        if "llmusage" in sql.replace("llmusage_accounting_failed", "")
    ]


@pytest.mark.postgres
@on_the_pair
def test_reads_go_to_the_replica_and_writes_with_their_reads_to_the_primary(on_replica, settings, make_staff):
    client = client_for(platform_key())
    assert client.post("/api/llmusage/", usage_payload(transno="seen-1"), format="json").status_code == 201
    on_replica.caught_up()
    # The replica stops replaying: it keeps answering, but as of now. With a lag allowed of an hour the
    # reads stay on it, so what they answer says which server answered.
    on_replica.replay("pause")
    settings.LLMLOG_REPLICA_MAX_LAG_SECONDS = 3600
    fresh = usage_payload(transno="fresh-1", status="failed", code=500)
    created = client.post("/api/llmusage/", fresh, format="json")
    assert created.status_code == 201
    fresh_id = created.json()["id"]

    # Reads: lists, get-item, counts, stats, search, history and the dialects answer from the replica,
    # which has not seen the new record.
    assert [row["transno"] for row in client.get("/api/llmusage/").json()["results"]] == ["seen-1"]
    assert client.get("/api/llmusage/count/").json()["count"] == 1
    assert client.get("/api/llmusage/count/?status=failed").json()["count"] == 0
    assert client.get("/api/llmusage/stats/").json()["requests"] == 1
    assert client.get("/api/llmusage/search/?keyword=fresh-1").json()["results"] == []
    assert client.get("/api/llmusage-history/").status_code == 200
    assert client.get("/api/log/").json()["data"]["total"] == 1
    assert client.post("/api/llm-log/count", {"query": {}}, format="json").json()["count"] == 1
    assert client.get("/api/logs/search").json()["data"]["total"] == 1
    # Get-item too, but a record not on the replica yet is asked of the primary before it is a 404:
    # a gateway reading back what it just sent finds it.
    assert client.get(f"/api/llmusage/{fresh_id}/").json()["transno"] == "fresh-1"
    assert client.post(f"/api/llm-log/{fresh_id}/get-item", {}, format="json").status_code == 200
    assert client.get(f"/api/llmusage/{uuid.uuid4()}/").status_code == 404
    # A record the replica has is its answer, as of its replay (changed since on the primary).
    seen_id = client.get("/api/llmusage/").json()["results"][0]["id"]
    assert client.patch(f"/api/llmusage/{seen_id}/", {"username": "Lin"}, format="json").status_code == 200
    assert client.get(f"/api/llmusage/{seen_id}/").json()["username"] == "Ada"

    # Django's own cursors show it too: usage SQL on the replica's connection, none on the primary's.
    with (
        CaptureQueriesContext(connections["default"]) as on_primary,
        CaptureQueriesContext(connections["replica1"]) as on_the_replica,
    ):
        assert client.get("/api/llmusage/stats/?model_name=gpt-4o").status_code == 200
        assert client.get("/api/llmusage/count/?userid=u-1").status_code == 200
    assert usage_queries(on_the_replica) and not usage_queries(on_primary)
    operator = Client()
    operator.force_login(make_staff("operator", perms=("llmlog.view_llmusage",)))
    with (
        CaptureQueriesContext(connections["default"]) as on_primary,
        CaptureQueriesContext(connections[REPLICA]) as on_the_replica,
    ):
        assert operator.get("/admin/dashboard/").status_code == 200
    assert usage_queries(on_the_replica) and not usage_queries(on_primary)

    # Writes, and the reads that decide or answer them, see the write at once: the primary.
    assert client.post("/api/llmusage/", fresh, format="json").status_code == 200  # duplicate: found
    changed = client.patch(f"/api/llmusage/{fresh_id}/", {"username": "Grace"}, format="json")
    assert changed.status_code == 200, changed.content
    assert changed.json()["username"] == "Grace"  # the answer is the record as just changed
    opened = client.post("/api/accounts/", {"org": "acme", "kind": "customer"}, format="json")
    assert opened.status_code == 201, opened.content
    assert client.get("/api/accounts/acme/").status_code == 200


@pytest.mark.postgres
@on_the_pair
def test_a_lagging_replica_sends_reads_to_the_primary_until_it_catches_up(on_replica, settings):
    client = client_for(platform_key())
    settings.LLMLOG_REPLICA_MAX_LAG_SECONDS = 1
    assert read_alias() == "replica1"  # caught up: lag 0
    on_replica.replay("pause")
    assert client.post("/api/llmusage/", usage_payload(transno="late-1"), format="json").status_code == 201
    time.sleep(2.2)  # past the lag allowed, and past the last check (llmlog.replicas.CHECK_SECONDS)

    assert client.get("/api/llmusage/count/").json()["count"] == 1  # the primary's answer
    assert read_alias() == PRIMARY
    [(alias, up, lag)] = replica_statuses()
    assert (alias, up) == ("replica1", True) and lag > 1
    metrics = scrape()
    assert 'llmlog_replica_up{replica="replica1"} 1.0' in metrics
    assert float(_sample(metrics, 'llmlog_replica_lag_seconds{replica="replica1"}')) > 1

    on_replica.replay("resume")
    on_replica.caught_up()
    time.sleep(1.1)
    settings.LLMLOG_REPLICA_MAX_LAG_SECONDS = 5  # a stray write (autovacuum) may show a moment of lag
    assert read_alias() == "replica1"
    [(alias, up, lag)] = replica_statuses()
    assert up and lag < 1


def scrape() -> str:
    return Client().get("/metrics", HTTP_AUTHORIZATION=f"Bearer {METRICS_TOKEN}").content.decode()


def _sample(metrics: str, series: str) -> str:
    [line] = [line for line in metrics.splitlines() if line.startswith(series + " ")]
    return line.split()[-1]


def test_lag_is_not_the_age_of_the_last_commit_on_an_idle_primary():
    """An hour without writes, then one: the replica replays it within milliseconds, but a check that
    lands before it sees the last replayed commit an hour old. It was seen caught up a second ago, so the
    lag is about a second, not an hour. Paused replay grows both bounds."""
    state = ReplicaState("replica1")
    now = time.time()
    assert _lag(state, now - 1, True, "0/3000060", "0/3000060", 3600.0) == 0.0  # caught up
    assert state.caught_up_at == now - 1
    behind = _lag(state, now, True, "0/3000100", "0/3000060", 3600.0)  # the first write after an hour
    assert 1.0 <= behind < 2.0
    state.caught_up_at = now - 30  # replay paused 30 s ago
    assert 29 < _lag(state, now, True, "0/3000100", "0/3000060", 45.0) < 31
    assert _lag(ReplicaState("r"), now, True, "0/3000100", "0/3000060", None) is None  # unknown
    assert _lag(ReplicaState("r"), now, False, "0/3000100", None, None) == 0.0  # not a standby


@pytest.mark.postgres
@on_the_pair
def test_a_replica_stopped_under_load_fails_no_request(on_replica):
    key = platform_key()
    client = client_for(key)
    for number in range(20):
        client.post("/api/llmusage/", usage_payload(transno=f"load-{number}"), format="json")
    record_id = client.get("/api/llmusage/?page_size=1").json()["results"][0]["id"]
    on_replica.caught_up()
    assert read_alias() == "replica1"
    paths = ["/api/llmusage/", "/api/llmusage/count/", "/api/llmusage/stats/", f"/api/llmusage/{record_id}/"]
    answers: list[tuple[str, int, float]] = []
    failures: list[BaseException] = []
    stop = threading.Event()

    def read() -> None:
        reader = client_for(key)
        try:
            while not stop.is_set():
                for path in paths:
                    answers.append((path, reader.get(path).status_code, time.monotonic()))
        except BaseException as exc:  # noqa: BLE001 - any failure is what the test looks for
            failures.append(exc)
        finally:
            connections.close_all()

    readers = [threading.Thread(target=read) for _ in range(4)]
    for thread in readers:
        thread.start()
    try:
        time.sleep(1.5)
        stopped_at = time.monotonic()
        on_replica.standby.stop("immediate")  # as a crash: connections cut, nothing flushed
        time.sleep(2.5)
        [(alias, up, lag)] = replica_statuses()
        metrics = scrape()
    finally:
        stop.set()
        for thread in readers:
            thread.join(timeout=30)
    assert not failures
    assert {status for _, status, _ in answers} == {200}
    assert sum(1 for *_, at in answers if at > stopped_at) >= 20  # reads went on while it was down
    assert (alias, up, lag) == ("replica1", False, None)
    assert 'llmlog_replica_up{replica="replica1"} 0.0' in metrics
    assert "llmlog_replica_lag_seconds{" not in metrics
    health = client.get("/healthz")
    assert health.json()["database"] == "ok", health.json()  # /healthz is about the primary

    on_replica.standby.start()
    on_replica.caught_up()
    forget_replica_states()  # instead of waiting out DOWN_SECONDS
    assert read_alias() == "replica1"


def test_database_replica_urls_become_replica_aliases():
    """Parsed at start-up: one alias per URL, in order, with a short connect timeout, never a test
    database of its own; a replica of SQLite, or a replica that is not PostgreSQL, stops start-up."""
    program = (
        "import json, django; django.setup(); from django.conf import settings as s; "
        "print(json.dumps({a: [d['PORT'], d['OPTIONS'].get('connect_timeout'), d['TEST'].get('MIRROR'), "
        "d['ENGINE']] for a, d in s.DATABASES.items() if a != 'default'} | "
        "{'aliases': s.LLMLOG_REPLICA_ALIASES, 'lag': s.LLMLOG_REPLICA_MAX_LAG_SECONDS}))"
    )

    def configure(**env: str) -> subprocess.CompletedProcess:
        environment = {"PATH": "/usr/bin:/bin", "DJANGO_SETTINGS_MODULE": "config.settings", **env}
        environment.setdefault("DJANGO_SECRET_KEY", "x")
        return subprocess.run(
            [sys.executable, "-c", program],
            cwd=ROOT,
            env=environment,
            capture_output=True,
            text=True,
            timeout=60,
        )

    done = configure(
        DATABASE_URL="postgres://u@primary:5432/llmlog",
        DATABASE_REPLICA_URLS="postgres://u@replica-a:5433/llmlog, postgres://u@replica-b/llmlog",
        LLMLOG_REPLICA_MAX_LAG_SECONDS="2",
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {
        "replica1": [5433, 2, "default", "llmlog.backends.postgresql"],
        "replica2": ["", 2, "default", "llmlog.backends.postgresql"],
        "aliases": ["replica1", "replica2"],
        "lag": 2,
    }
    unset = configure(DATABASE_URL="postgres://u@primary:5432/llmlog")
    assert json.loads(unset.stdout) == {"aliases": [], "lag": 5}
    for env in (
        {"DATABASE_URL": "sqlite:////tmp/x.sqlite3", "DATABASE_REPLICA_URLS": "postgres://u@r/llmlog"},
        {"DATABASE_URL": "postgres://u@p/llmlog", "DATABASE_REPLICA_URLS": "mysql://u@r/llmlog"},
    ):
        refused = configure(**env)
        assert refused.returncode != 0 and "DATABASE_REPLICA_URLS" in refused.stderr
