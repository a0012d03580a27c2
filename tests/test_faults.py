"""Faults: the database restarted under load, the broker and cache gone, a worker killed mid-task.

PostgreSQL and Redis only (`postgres` marker), and self-contained: no other test depends on these, and
these disturb nothing another test or another engineer's run uses.

- PostgreSQL is restarted on a cluster of its own, `llmlog_faults` (created with pg_createcluster on a
  free port the first time, started for the test, stopped after it, whatever happens), never on the
  shared cluster: stopping that one would fail every other test run on the machine at that moment. The
  app under test is the same either way: gunicorn whose DATABASE_URL points at the cluster.
- Redis is a private redis-server on a free port, started and stopped by the test (the shared one
  holds other runs' queues and caches).
- The worker is a real Celery worker process on that private Redis; its message is redelivered by the
  broker (acks_late), which is what a crash relies on in production.

Each test skips, saying why, when it cannot control its service here (no pg_createcluster or
redis-server, not root).
"""

import json
import shutil
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest
import redis
from celery import Celery
from django.db import connection

from accounting.models import LedgerTransaction
from llmlog.keys import api_key_create
from llmlog.models import JobRun, LLMUsage
from tests.factories import balance, insert_usage, make_accounts, usage_row
from tests.pgclusters import (
    cannot_make_clusters,
    cluster_create,
    cluster_ctl,
    cluster_running,
    database_create,
    manage,
)
from tests.servers import (
    celery_worker,
    connect_to_the_test_database,
    free_port,
    gunicorn_server,
)

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

FAULTS_CLUSTER = "llmlog_faults"
FAULTS_DATABASE = "llmlog_faults"
OUTAGE_SECONDS = 3  # seconds-short: long enough for requests to hit it, short like a real restart
REQUEST_TIMEOUT = 20


# --- PostgreSQL: a cluster of the test's own ---------------------------------------------------------


def ctl(action: str, *extra: str) -> None:
    cluster_ctl(FAULTS_CLUSTER, action, *extra)


@contextmanager
def faults_cluster() -> Iterator[str]:
    """The llmlog_faults cluster, running and migrated; yields its DATABASE_URL. Stopped after."""
    if reason := cannot_make_clusters():
        pytest.skip(reason)
    port = cluster_create(FAULTS_CLUSTER)
    if isinstance(port, str):
        pytest.skip(port)
    try:
        if not cluster_running(FAULTS_CLUSTER):
            ctl("start")
        url = database_create(port, FAULTS_DATABASE)
        manage("migrate", "--no-input", database_url=url)
        with psycopg.connect(url.replace("postgres://", "postgresql://", 1), autocommit=True) as conn:
            conn.execute("TRUNCATE llmusage, llmusage_history")
        yield url
    finally:
        ctl("stop", "-m", "fast")


# --- load that remembers what was acknowledged ------------------------------------------------------


class Sender:
    """Client threads posting records (one, or a batch of 5) on keep-alive connections until stopped.
    Every request is kept: its records, status, body and how long it took."""

    def __init__(self, port: int, key: str, clients: int = 8) -> None:
        self.port, self.key, self.clients = port, key, clients
        self.sent: list[dict] = []  # {records, status, body, seconds, started}
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self.run, args=(n,), daemon=True) for n in range(clients)]

    def __enter__(self) -> "Sender":
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=REQUEST_TIMEOUT + 10)
        assert not any(thread.is_alive() for thread in self.threads), "a client hung"

    def run(self, number: int) -> None:
        import http.client

        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=REQUEST_TIMEOUT)
        n = 0
        while not self.stop.is_set():
            n += 1
            size = 5 if n % 4 == 0 else 1
            records = [
                {
                    "transno": f"fault-{number}-{n}-{i}-{uuid.uuid4().hex[:6]}",
                    "model_name": "gpt-4o",
                    "userorgid": "acme",
                    "input_tokens": 100 + n,
                    "output_tokens": 10 + i,
                    "amount": f"{n}.{number:02d}{i:03d}",
                    "cost": "0.00100",
                }
                for i in range(size)
            ]
            entry = post(conn, self.key, records if size > 1 else records[0])
            if entry["status"] == 0:  # the connection broke: a fresh one for the next request
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=REQUEST_TIMEOUT)
            entry["records"] = records
            with self.lock:
                self.sent.append(entry)
            time.sleep(0.01)
        conn.close()


def post(conn, key: str, payload) -> dict:
    started = time.monotonic()
    try:
        conn.request(
            "POST",
            "/api/llmusage/",
            body=json.dumps(payload),
            headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
        )
        response = conn.getresponse()
        body, status, retry_after = response.read(), response.status, response.getheader("Retry-After")
    except OSError as exc:
        body, status, retry_after = repr(exc).encode(), 0, None
    return {
        "status": status,
        "body": body,
        "retry_after": retry_after,
        "seconds": time.monotonic() - started,
        "started": started,
    }


def test_postgres_restarted_under_ingest_load_fails_cleanly_and_loses_nothing(tmp_path):
    import http.client

    with faults_cluster() as database_url:
        raw_url = database_url.replace("postgres://", "postgresql://", 1)
        created = manage(
            "create_api_key", "--platform", "--role", "admin", "--scope", "ingest", database_url=database_url
        )
        key = created.strip().splitlines()[-1]
        with gunicorn_server(tmp_path, env={"DATABASE_URL": database_url}) as port:
            with Sender(port, key) as sender:
                time.sleep(3)
                down_at = time.monotonic()
                ctl("stop", "-m", "fast")
                time.sleep(OUTAGE_SECONDS)
                ctl("start")
                up_at = time.monotonic()
                time.sleep(6)

            # Every request finished (Sender checks that no client hung), each answer a success or a
            # 503 saying what happened and when to come back: never a 500 page, never a hang.
            statuses = {entry["status"] for entry in sender.sent}
            failed = [entry for entry in sender.sent if entry["status"] not in (200, 201)]
            assert statuses <= {200, 201, 503}, {e["status"]: e["body"][:200] for e in failed}
            assert failed, "the outage was not felt: no request failed"
            for entry in failed:
                assert b"database is unavailable" in entry["body"] and entry["retry_after"] == "5", entry
            assert max(entry["seconds"] for entry in sender.sent) < REQUEST_TIMEOUT
            assert all(down_at - 1 < e["started"] < up_at + 3 for e in failed), "failures outside the outage"
            after = [entry for entry in sender.sent if entry["started"] > up_at + 3]
            assert after and all(entry["status"] == 201 for entry in after), "ingest did not come back"

            # No half-written request: a batch is all there or not at all; an acknowledged one is there.
            with psycopg.connect(raw_url) as conn:
                stored = {row[0] for row in conn.execute("SELECT transno FROM llmusage").fetchall()}
            for entry in sender.sent:
                there = [record["transno"] in stored for record in entry["records"]]
                assert all(there) or not any(there), ("half a batch", entry["status"])
                if entry["status"] in (200, 201):
                    assert all(there), "an acknowledged record is missing"

            # A gateway resends what failed: each is stored now (201) or was already (200, when the
            # database committed it just before the connection went).
            client = http.client.HTTPConnection("127.0.0.1", port, timeout=REQUEST_TIMEOUT)
            for entry in failed:
                again = post(
                    client, key, entry["records"] if len(entry["records"]) > 1 else entry["records"][0]
                )
                assert again["status"] in (200, 201), again
            client.close()

        with psycopg.connect(raw_url) as conn:
            rows = conn.execute(
                "SELECT transno, amount, input_tokens, output_tokens, total_tokens FROM llmusage"
            ).fetchall()
    sent = {record["transno"]: record for entry in sender.sent for record in entry["records"]}
    assert len(rows) == len(sent)  # everything sent, each once (transno is unique)
    for transno, amount, input_tokens, output_tokens, total_tokens in rows:
        record = sent[transno]  # whole records: every column as sent
        assert amount == Decimal(record["amount"])
        assert (input_tokens, output_tokens) == (record["input_tokens"], record["output_tokens"])
        assert total_tokens == input_tokens + output_tokens


# --- Redis: a server of the test's own ----------------------------------------------------------------


class PrivateRedis:
    """redis-server on a free loopback port, without persistence, that the test stops and starts."""

    def __init__(self, directory: Path) -> None:
        if not shutil.which("redis-server"):
            pytest.skip("needs redis-server to run a Redis of its own")
        self.port, self.directory, self.process = free_port(), directory, None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        command = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                   "--appendonly", "no", "--dir", str(self.directory)]  # fmt: skip
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while True:
            try:
                redis.Redis(port=self.port, socket_timeout=1).ping()
                return
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=20)


@contextmanager
def private_redis(directory: Path) -> Iterator[PrivateRedis]:
    server = PrivateRedis(directory)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def wait_for(condition, *, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.25)


def test_redis_down_ingest_still_stores_and_accounting_catches_up_when_it_returns(tmp_path):
    make_accounts(funds=Decimal(1000))
    # The records state their amount: the platform gateway's key (an org key's would be a 403).
    _, key = api_key_create(userorgid="", role="admin", scopes=["ingest", "read"])
    import http.client

    with private_redis(tmp_path) as broker:
        # The throttle is on (for the platform key this test writes with too): with Redis gone it must let
        # ingest through, not refuse or stall it.
        env = {
            "REDIS_URL": broker.url,
            "LLMLOG_INGEST_RATE": "600/min",
            "LLMLOG_PLATFORM_INGEST_RATE": "600/min",
        }
        with gunicorn_server(tmp_path, env=env) as port:
            client = http.client.HTTPConnection("127.0.0.1", port, timeout=REQUEST_TIMEOUT)

            def ingest(prefix: str, count: int) -> list[dict]:
                record = {
                    "model_name": "gpt-4o",
                    "userorgid": "acme",
                    "input_tokens": 100,
                    "output_tokens": 20,
                    "amount": "0.01000",
                }
                return [post(client, key, {**record, "transno": f"{prefix}-{i}"}) for i in range(count)]

            before = ingest("up", 3)
            broker.stop()
            during = ingest("down", 20)
            stored_during = LLMUsage.objects.filter(transno__startswith="down-").count()
            broker.start()
            with celery_worker(tmp_path, broker_url=broker.url, prefix="faults"):
                time.sleep(6)  # past the posting request's debounce in each gunicorn worker
                after = ingest("back", 4)  # each worker asks for a posting run again
                wait_for(
                    lambda: not LLMUsage.objects.filter(accounting_status="pending").exists(),
                    timeout=90,
                    what="the posting run to account every pending record",
                )

    assert [r["status"] for r in before + during + after] == [201] * 27, [r["body"][:200] for r in during]
    # A hang guard, not a latency bound: a request that waited for Redis to come back (a publish retried
    # until the broker answers, a throttle without its 0.5 s socket timeouts) takes far longer than this.
    assert max(r["seconds"] for r in during) < 10, [r["seconds"] for r in during]
    assert stored_during == 20
    assert LLMUsage.objects.filter(accounting_status="accounted").count() == 27
    assert LedgerTransaction.objects.filter(kind="usage").values("usage_id").distinct().count() == 27
    assert balance("acme") == Decimal(1000) - 27 * Decimal("0.01")


def test_a_worker_killed_mid_task_gets_its_task_again_and_posts_each_record_once(tmp_path):
    """acks_late: the broker redelivers a task whose worker died before acknowledging it. The killed
    run's batch rolled back, so the rerun posts every record, and each once."""
    make_accounts(funds=Decimal(1000))
    insert_usage([usage_row() for _ in range(300)])
    # Redelivery waits for the broker's visibility timeout (an hour by default) and then for the
    # worker's next sweep of unacknowledged messages (every 10th tick of 10 s): seconds here.
    (tmp_path / "faults_settings.py").write_text(
        "from tests.settings import *  # noqa: F403\n"
        'CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 5, "unacked_restore_interval": 0.5}\n'
    )
    with private_redis(tmp_path) as broker:
        blocker = connect_to_the_test_database()
        try:
            # Hold the platform account: the worker claims its batch, then waits for this lock.
            blocker.execute("SELECT id FROM accounting_account WHERE kind = 'platform' FOR UPDATE")
            with celery_worker(
                tmp_path, broker_url=broker.url, prefix="faults", settings_module="faults_settings"
            ) as victim:
                # Not set as the current app: the app's own tasks would then publish to this broker.
                private = Celery(broker=broker.url, set_as_current=False)
                private.send_task("llmlog.tasks.account_pending_usage")
                wait_for(lambda: waiting_on_lock() is not None, timeout=60, what="the task to reach the lock")
                pid = waiting_on_lock()
                victim.send_signal(signal.SIGKILL)
                victim.wait(timeout=30)
        finally:
            blocker.rollback()
            blocker.close()
        wait_for(lambda: not backend_alive(pid), timeout=60, what="the killed worker's session to end")

        # The killed run posted nothing and left its run open.
        assert LedgerTransaction.objects.filter(kind="usage").count() == 0
        assert LLMUsage.objects.filter(accounting_status="pending").count() == 300
        assert JobRun.objects.get(job="account_pending_usage").status == "running"

        with celery_worker(
            tmp_path, broker_url=broker.url, prefix="faults", settings_module="faults_settings"
        ):
            wait_for(
                lambda: JobRun.objects.filter(job="account_pending_usage", status="succeeded").exists(),
                timeout=90,
                what="the redelivered task to run",
            )

    assert LLMUsage.objects.filter(accounting_status="accounted").count() == 300
    assert LedgerTransaction.objects.filter(kind="usage").count() == 300
    assert LedgerTransaction.objects.filter(kind="usage").values("usage_id").distinct().count() == 300
    assert balance("acme") == Decimal(1000) - 300 * Decimal("0.006")
    assert JobRun.objects.get(job="account_pending_usage", status="succeeded").counts["accounted"] == 300


def waiting_on_lock() -> int | None:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
            "AND wait_event_type = 'Lock' AND query LIKE %s",
            ["%accounting_account%FOR UPDATE%"],
        )
        row = cursor.fetchone()
    return row[0] if row else None


def backend_alive(pid: int) -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", [pid])
        return cursor.fetchone() is not None
