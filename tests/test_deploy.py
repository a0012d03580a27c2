"""deploy/ (the production recipe) runs as written: its unit files parse and name what exists, gunicorn
accepts the web unit's command line, the worker unit's command answers a ping, beat starts, the migrate
step builds a fresh database, and backup.sh writes a dump pg_restore can read."""

import os
import shlex
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psycopg
import pytest
from django.conf import settings
from django.db import connection

from config.celery import app
from tests.servers import stop, url_of_the_test_database

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
UNITS = DEPLOY / "systemd"
INSTALL_DIR = "/opt/llmlog"  # where the units expect the checkout; here it is ROOT
SERVICES = ("llmlog-migrate", "llmlog-web", "llmlog-worker", "llmlog-beat", "llmlog-backup")


def unit(name: str) -> dict[str, list[str]]:
    """A systemd unit file as {"Section.Key": [values...]} (systemd allows a key more than once)."""
    entries: dict[str, list[str]] = {}
    section = ""
    for raw in (UNITS / name).read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            continue
        key, sep, value = line.partition("=")
        assert sep, f"{name}: not a key=value line: {raw!r}"
        entries.setdefault(f"{section}.{key.strip()}", []).append(value.strip())
    return entries


def local_command(line: str) -> list[str]:
    """An ExecStart line with the install directory mapped to this checkout and %H to this host."""
    return [part.replace(INSTALL_DIR, str(ROOT)).replace("%H", "localhost") for part in shlex.split(line)]


def env_template() -> dict[str, str]:
    values = {}
    for line in (DEPLOY / "llmlog.env.example").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, _, value = line.partition("=")
            values[key] = value
    return values


def unit_environment(tmp_path: Path, **overrides: str) -> dict[str, str]:
    """The env template as a unit sees it, pointed at the test database and broker."""
    env = dict(os.environ)
    env.pop("DJANGO_SETTINGS_MODULE", None)  # the units run config.settings
    env.update(env_template())
    env.update(
        DATABASE_URL=url_of_the_test_database(),
        LLMLOG_VAR_DIR=str(tmp_path / "var"),
        LLMLOG_BACKUP_DIR=str(tmp_path / "backups"),
    )
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)  # config/gunicorn.py sets it for the web, under LLMLOG_VAR_DIR
    for name in ("REDIS_URL", "CACHE_REDIS_URL"):
        if os.environ.get(name):
            env[name] = os.environ[name]
        else:
            env.pop(name, None)  # the embedded broker, as the SQLite pass runs
    env.update(overrides)
    return env


@pytest.mark.parametrize("name", [f"{service}.service" for service in SERVICES])
def test_each_unit_parses_and_runs_what_the_checkout_has(name) -> None:
    entries = unit(name)

    assert entries["Unit.Description"]
    assert entries["Service.EnvironmentFile"] == ["/etc/llmlog/llmlog.env"]
    assert entries["Service.WorkingDirectory"] == [INSTALL_DIR]
    assert entries["Service.User"] == ["llmlog"]
    for line in entries["Service.ExecStart"]:
        program = local_command(line)[0]
        if program.startswith(str(ROOT / ".venv")):
            assert Path(program).exists(), f"{name}: {program} is not in the virtualenv"
        else:
            assert Path(program).is_file() and os.access(program, os.X_OK), f"{name}: {program}"
    if name != "llmlog-migrate.service" and name != "llmlog-backup.service":
        assert entries["Unit.Requires"] == ["llmlog-migrate.service"], "starts before the schema is current"
    assert (UNITS / "llmlog-backup.timer").exists()


def test_every_variable_of_the_env_template_is_one_the_app_reads() -> None:
    read = "".join(
        (ROOT / path).read_text() for path in ("config/settings.py", "config/gunicorn.py", "deploy/backup.sh")
    )
    for name in env_template():
        assert name in read, f"{name} in llmlog.env.example is read by nothing"


def test_gunicorn_accepts_the_web_units_command(db, tmp_path) -> None:
    (command,) = unit("llmlog-web.service")["Service.ExecStart"]
    argv = local_command(command) + ["--check-config"]

    done = subprocess.run(argv, cwd=ROOT, env=unit_environment(tmp_path), capture_output=True, text=True)

    assert done.returncode == 0, done.stdout + done.stderr


def test_the_web_unit_runs_gthread_workers_sized_by_the_env_file(tmp_path) -> None:
    """One worker model everywhere: config/gunicorn.py's (gthread), sized by WEB_WORKERS / WEB_THREADS."""
    (command,) = unit("llmlog-web.service")["Service.ExecStart"]
    argv = local_command(command) + ["--print-config"]
    env = unit_environment(tmp_path, WEB_WORKERS="3", WEB_THREADS="5")

    done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True)

    config = dict(
        (name.strip(), value.strip())
        for name, _, value in (line.partition("=") for line in done.stdout.splitlines())
    )
    assert (config["worker_class"], config["workers"], config["threads"]) == ("gthread", "3", "5"), (
        done.stderr
    )


def test_the_worker_units_command_answers_a_ping(db, tmp_path) -> None:
    (command,) = unit("llmlog-worker.service")["Service.ExecStart"]
    name = f"deploy-{uuid.uuid4().hex[:8]}@localhost"
    argv = [part.replace("worker@localhost", name) for part in local_command(command)]
    log = (tmp_path / "worker.log").open("w")
    env = unit_environment(tmp_path)
    if not os.environ.get("REDIS_URL"):  # the embedded broker is a folder under var/: share the test's
        env["LLMLOG_VAR_DIR"] = str(settings.VAR_DIR)
    worker = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while not app.control.ping(destination=[name], timeout=1):
            assert worker.poll() is None, (tmp_path / "worker.log").read_text()
            assert time.monotonic() < deadline, "the worker did not answer within 60 s"
    finally:
        stop(worker)
        log.close()


def test_the_beat_units_command_starts_its_schedule(transactional_db, tmp_path) -> None:
    (command,) = unit("llmlog-beat.service")["Service.ExecStart"]
    env = unit_environment(tmp_path)
    log_path = tmp_path / "beat.log"
    with log_path.open("w") as log:
        beat = subprocess.Popen(
            local_command(command), cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
        )
        try:
            deadline = time.monotonic() + 30
            while "beat: Starting" not in log_path.read_text():
                assert beat.poll() is None, log_path.read_text()
                assert time.monotonic() < deadline, log_path.read_text()
                time.sleep(0.3)
            time.sleep(2)
            assert beat.poll() is None, log_path.read_text()  # still running: its scheduler loaded
        finally:
            stop(beat)


@pytest.fixture
def fresh_database(tmp_path) -> str:
    """An empty database of the same kind as the test database, dropped after."""
    if connection.vendor != "postgresql":
        yield f"sqlite:///{tmp_path / 'fresh.sqlite3'}"
        return
    name = f"llmlog_deploy_{uuid.uuid4().hex[:8]}"
    base = url_of_the_test_database().rsplit("/", 1)[0]
    # CREATE/DROP DATABASE cannot run in a transaction: a connection of its own, in autocommit.
    with psycopg.connect(f"{base}/postgres", autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(f"{base}/postgres", autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_the_migrate_step_builds_a_fresh_database(db, fresh_database, tmp_path) -> None:
    env = unit_environment(tmp_path, DATABASE_URL=fresh_database)
    for command in unit("llmlog-migrate.service")["Service.ExecStart"]:
        done = subprocess.run(local_command(command), cwd=ROOT, env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stdout + done.stderr

    check = subprocess.run(
        [sys.executable, "manage.py", "migrate", "--check"], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert check.returncode == 0, "migrations left unapplied: " + check.stdout + check.stderr
    assert (tmp_path / "var" / "static" / "llmlog" / "admin.css").exists()  # collectstatic ran


@pytest.mark.postgres
def test_the_backup_writes_a_dump_pg_restore_reads(db, fresh_database, tmp_path) -> None:
    env = unit_environment(tmp_path, DATABASE_URL=fresh_database)
    migrate = subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput", "-v0"], cwd=ROOT, env=env, capture_output=True
    )
    assert migrate.returncode == 0, migrate.stderr
    (command,) = unit("llmlog-backup.service")["Service.ExecStart"]

    done = subprocess.run(local_command(command), cwd=ROOT, env=env, capture_output=True, text=True)

    assert done.returncode == 0, done.stderr
    dump = Path(done.stdout.strip().splitlines()[-1])
    assert dump.parent == tmp_path / "backups" and dump.suffix == ".dump" and dump.stat().st_size > 0
    assert not list(dump.parent.glob("*.partial"))
    listing = subprocess.run(["pg_restore", "--list", str(dump)], capture_output=True, text=True)
    assert listing.returncode == 0, listing.stderr
    assert "TABLE public llmusage " in listing.stdout and "llmusage_accounting_failed" in listing.stdout


def test_the_backup_refuses_a_database_it_cannot_dump(tmp_path) -> None:
    env = unit_environment(tmp_path, DATABASE_URL=f"sqlite:///{tmp_path / 'x.sqlite3'}")
    done = subprocess.run([str(DEPLOY / "backup.sh")], env=env, capture_output=True, text=True)
    assert done.returncode == 2 and "PostgreSQL" in done.stderr
