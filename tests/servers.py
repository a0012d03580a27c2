"""The processes tests start outside themselves, in one place: gunicorn serving the app and a Celery
worker, both on the test database; the test database's URL for them (and for a connection of a test's
own); a free loopback port; stopping a process that may hang on SIGTERM."""

import http.client
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
from celery import Celery
from django.conf import settings
from django.db import connection

from config.celery import app

ROOT = Path(__file__).resolve().parent.parent


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


def connect_to_the_test_database(**kwargs) -> psycopg.Connection:
    """A psycopg connection of the test's own to the test database (PostgreSQL), outside Django's: to hold
    a lock while the app under test waits on it, or to end one of its sessions."""
    return psycopg.connect(url_of_the_test_database().replace("postgres://", "postgresql://", 1), **kwargs)


def stop(process: subprocess.Popen, *, timeout: float = 20) -> None:
    """SIGTERM, then SIGKILL if it has not ended within `timeout` (a worker or beat can hang on SIGTERM,
    ECOSYSTEM.md); waits for it either way."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


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
        stop(server)
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
    control = Celery(broker=broker_url, set_as_current=False).control if broker_url else app.control
    try:
        deadline = time.monotonic() + 60
        while not control.ping(destination=[name], timeout=1):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"Celery worker did not start:\n{log_path.read_text()[-3000:]}")
        yield process
    finally:
        # The test is over: killed, not stopped. A warm or a cold shutdown took 4 s each (the consumer
        # loop's poll and timer run out first), in some twenty tests of each CI pass; what a worker does
        # on SIGTERM is tested where it matters (test_deploy, test_faults).
        process.kill()
        process.wait()
        log.close()
