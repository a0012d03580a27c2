"""Data for the hardening tests (fuzzing, hostile queries, tenancy): two orgs whose records are easy to
tell apart, in every place a read can find them.

Every text field of a globex record carries GLOBEX_MARK (and acme's ACME_MARK), its amounts and token
counts are far from acme's, and each org has hot records (pending, accounted, failed, one started a
few seconds ago so RPM/TPM count it), a history record, an account with ledger lines and an open
accounting failure. A response for acme that holds GLOBEX_MARK, or a total that is not acme's own, has
let globex's data in.
"""

import hashlib
import http.client
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from celery import Celery
from django.conf import settings
from django.db import connection
from django.utils import timezone

from accounting.failures import FailedPosting, failures_record
from accounting.ledger import account_create, ledger_topup
from config.celery import app
from llmlog.models import LLMUsage, LLMUsageHistory, UsageRecord

ROOT = Path(__file__).resolve().parent.parent
ORGS = ("acme", "globex")
ACME_MARK = "acmemark9q"
GLOBEX_MARK = "globexmark7z"
MARKS = {"acme": ACME_MARK, "globex": GLOBEX_MARK}
# Per org: what every record of the org is worth, so a total that includes another org's record shows.
AMOUNTS = {"acme": Decimal("0.01234"), "globex": Decimal("777.00001")}
INPUT_TOKENS = {"acme": 1000, "globex": 9_000_000}
OUTPUT_TOKENS = {"acme": 200, "globex": 3_000_000}
# The gateway key each org's records were made with (new-api's /api/log/token?key=).
GATEWAY_KEYS = {"acme": "sk-acme-gateway-key", "globex": "sk-globex-gateway-key"}


@dataclass
class OrgData:
    org: str
    hot: list[LLMUsage] = field(default_factory=list)
    history: list[LLMUsageHistory] = field(default_factory=list)

    @property
    def records(self) -> list[UsageRecord]:
        return [*self.hot, *self.history]

    @property
    def ids(self) -> set[str]:
        return {str(record.pk) for record in self.records}

    @property
    def amount(self) -> Decimal:
        return sum((record.amount for record in self.records), Decimal(0))


def _record(model: type[UsageRecord], org: str, n: int, **overrides: Any) -> UsageRecord:
    mark = MARKS[org]
    use_time = overrides.pop("use_time", timezone.now() - timedelta(days=2, minutes=n))
    values: dict[str, Any] = {
        "transno": f"{mark}-t{n}",
        "taskid": f"{mark}-task",
        "use_time": use_time,
        "use_date": timezone.localdate(use_time),
        "userid": f"{mark}-user",
        "username": f"{mark}-name",
        "userorgid": org,
        "token_id": f"{mark}-tok",
        "token_name": f"{mark}-token",
        "token_key_hash": hashlib.sha256(GATEWAY_KEYS[org].encode()).hexdigest(),
        "group": f"{mark}-group",
        "feature": f"{mark}-feature",
        "llmid": f"{mark}-llm",
        "model_name": f"{mark}-model",
        "ownerid": f"{mark}-owner",
        "provider": f"{mark}-provider",
        "provider_type": "openai",
        "channel_id": f"{mark}-channel",
        "endpoint": f"/v1/chat/completions?{mark}",
        "input_tokens": INPUT_TOKENS[org],
        "output_tokens": OUTPUT_TOKENS[org],
        "amount": AMOUNTS[org],
        "cost": AMOUNTS[org] / 2,
        "status": "success",
        "code": 200,
        "error_message": "",
        "ioinfo": {"request": f"{mark} prompt", "response": f"{mark} answer", "truncated": False},
        "metadata": {"incidentId": f"{mark}-incident", "tag": mark},
        "accounting_status": "accounted",
        "accounted_at": timezone.now(),
        "price": {"sale": {"input_price": "1", "note": mark}},
    }
    if model is LLMUsageHistory:
        values["backup_time"] = timezone.now()
    values.update(overrides)
    values["total_tokens"] = values["input_tokens"] + values["output_tokens"]
    return model.objects.create(**values)


def seed_org(org: str) -> OrgData:
    """One org's records, account, ledger lines and open failure (see the module docstring)."""
    mark = MARKS[org]
    data = OrgData(org=org)
    data.hot.append(_record(LLMUsage, org, 1, accounting_status="pending", accounted_at=None))
    data.hot.append(_record(LLMUsage, org, 2))
    data.hot.append(
        _record(
            LLMUsage,
            org,
            3,
            use_time=timezone.now() - timedelta(seconds=5),
            accounting_status="pending",
            accounted_at=None,
        )
    )
    failed = _record(
        LLMUsage,
        org,
        4,
        status="failed",
        code=500,
        error_message=f"upstream exploded {mark}",
        accounting_status="failed",
        accounted_at=None,
    )
    data.hot.append(failed)
    data.history.append(_record(LLMUsageHistory, org, 5, use_time=timezone.now() - timedelta(days=40)))

    account_create(org=org, kind="customer")
    ledger_topup(org=org, amount=Decimal("10"), reference=f"{mark}-topup", memo=f"{mark} memo")
    failures_record(
        failures=[
            FailedPosting(
                usage_id=failed.pk,
                transno=failed.transno,
                use_date=failed.use_date,
                error_code="insufficient_balance",
                error_message=f"{mark} is out of money",
                userid=failed.userid,
                userorgid=org,
                ownerid=failed.ownerid,
                llmid=failed.llmid,
                model_name=failed.model_name,
                amount=failed.amount,
                cost=failed.cost,
            )
        ]
    )
    return data


def seed_orgs() -> dict[str, OrgData]:
    return {org: seed_org(org) for org in ORGS}


# --- the app under gunicorn, on the test database (load and fault tests) --------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def url_of_the_test_database() -> str:
    """The test database as a DATABASE_URL, for processes outside the test (gunicorn, a worker, a
    blocking connection: psycopg takes it with `postgresql://`)."""
    db = settings.DATABASES["default"]
    if connection.vendor == "postgresql":
        password = f":{db['PASSWORD']}" if db["PASSWORD"] else ""
        return f"postgres://{db['USER']}{password}@{db['HOST']}:{db['PORT'] or 5432}/{db['NAME']}"
    return f"sqlite:///{db['NAME']}"


@contextmanager
def gunicorn_server(
    log_dir: Path,
    *,
    workers: int | None = None,
    threads: int | None = None,
    env: dict[str, str] | None = None,
) -> Iterator[int]:
    """gunicorn serving the app on a free loopback port, on the test database and the configured broker
    and cache; yields the port. The worker model is production's (config/gunicorn.py: gthread, its
    workers and threads) unless the test names its own. The ingest throttle is off unless `env` sets it."""
    port = free_port()
    environment = dict(
        os.environ,
        DJANGO_SETTINGS_MODULE="tests.settings",
        DATABASE_URL=url_of_the_test_database(),
        LLMLOG_INGEST_RATE="off",
        LOG_LEVEL="WARNING",
        PROMETHEUS_MULTIPROC_DIR=str(log_dir / "prometheus"),
    )
    environment.update(env or {})
    log = (log_dir / "gunicorn.log").open("w")
    command = [
        sys.executable,
        "-m",
        "gunicorn",
        "-c",
        str(ROOT / "config/gunicorn.py"),
        "config.wsgi",
        f"--bind=127.0.0.1:{port}",
        *([f"--workers={workers}"] if workers else []),
        *([f"--threads={threads}"] if threads else []),
        "--keep-alive=30",
        "--timeout=60",
        "--graceful-timeout=5",
    ]
    server = subprocess.Popen(command, cwd=ROOT, env=environment, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                probe = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                probe.request("GET", "/api/schema/")
                if probe.getresponse().status == 200:
                    break
            except OSError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"gunicorn did not start:\n{(log_dir / 'gunicorn.log').read_text()[-3000:]}"
                )
            time.sleep(0.2)
        yield port
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()


@contextmanager
def celery_worker(
    log_dir: Path,
    *,
    broker_url: str | None = None,
    settings_module: str = "tests.settings",
    prefix: str = "test",
) -> Iterator[subprocess.Popen]:
    """A real Celery worker (solo pool) in its own process, on the test database and `broker_url` (the
    configured broker when None: Redis when REDIS_URL is set, the embedded one otherwise); yields the
    process once it answers a ping, and stops it after (killed if SIGTERM does not end it)."""
    env = dict(
        os.environ,
        DJANGO_SETTINGS_MODULE=settings_module,
        DATABASE_URL=url_of_the_test_database(),
        PYTHONPATH=f"{log_dir}{os.pathsep}{ROOT}",
    )
    if broker_url:
        env["REDIS_URL"] = broker_url
    name = f"{prefix}-{uuid.uuid4().hex[:8]}@localhost"
    log_path = log_dir / f"{name}.log"
    log = log_path.open("w")
    command = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "config",
        "worker",
        "--pool",
        "solo",
        "-n",
        name,
        "-l",
        "INFO",
    ]
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    control = Celery(broker=broker_url).control if broker_url else app.control
    try:
        deadline = time.monotonic() + 60
        while not control.ping(destination=[name], timeout=1):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"Celery worker did not start:\n{log_path.read_text()[-3000:]}")
        yield process
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()  # a worker can hang on SIGTERM (ECOSYSTEM.md)
                process.wait()
        log.close()
