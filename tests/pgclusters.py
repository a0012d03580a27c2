"""PostgreSQL clusters of a test's own, beside the machine's (Debian's postgresql-common tools).

The fault tests restart a cluster of their own; the replica tests stream one cluster into another.
Neither may touch the shared cluster that every other test run on the machine is using. Each helper
needs root (the clusters belong to the postgres user) and pg_createcluster; `cannot_make_clusters()`
says why not, for a skip.
"""

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parent.parent
PG_VERSION = "15"


def pg(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout)


def cannot_make_clusters() -> str | None:
    """Why this machine cannot run a PostgreSQL cluster of a test's own (None: it can)."""
    if not (shutil.which("pg_createcluster") and shutil.which("pg_ctlcluster")) or os.geteuid() != 0:
        return "needs root and postgresql-common (pg_createcluster) to run a PostgreSQL of its own"
    return None


def _listed(name: str) -> list[str] | None:
    for line in pg("pg_lsclusters", "--no-header").stdout.splitlines():
        fields = line.split()
        if fields[:2] == [PG_VERSION, name]:
            return fields
    return None


def cluster_port(name: str) -> int | None:
    listed = _listed(name)
    return int(listed[2]) if listed else None


def cluster_running(name: str) -> bool:
    listed = _listed(name)
    return bool(listed) and "online" in listed


def cluster_directory(name: str) -> Path:
    listed = _listed(name)
    assert listed, f"no cluster {name}"
    return Path(listed[5])


def cluster_ctl(name: str, action: str, *extra: str) -> None:
    done = pg("pg_ctlcluster", "--skip-systemctl-redirect", PG_VERSION, name, action, *extra)
    if done.returncode != 0 and not (action == "stop" and "not running" in done.stderr + done.stdout):
        raise RuntimeError(f"pg_ctlcluster {action} {name}: {done.stderr or done.stdout}")


def cluster_create(name: str) -> int | str:
    """Create the cluster unless it exists (trust on loopback, as the machine's own: a test cluster
    with no data worth a password); its port, or why it could not be made."""
    if cluster_port(name) is None:
        made = pg("pg_createcluster", PG_VERSION, name, "--", "--auth=trust")
        if made.returncode != 0:
            return f"could not create a PostgreSQL cluster here: {made.stderr[-500:]}"
    return cluster_port(name)


def cluster_drop(name: str) -> None:
    if cluster_port(name) is not None:
        pg("pg_dropcluster", "--stop", PG_VERSION, name)


def database_create(port: int, database: str) -> str:
    """The database on the cluster at `port`, created if absent; its DATABASE_URL."""
    with psycopg.connect(f"postgresql://postgres@127.0.0.1:{port}/postgres", autocommit=True) as admin:
        if not admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", [database]).fetchone():
            admin.execute(f'CREATE DATABASE "{database}"')
    return f"postgres://postgres@127.0.0.1:{port}/{database}"


PG_BIN = Path(f"/usr/lib/postgresql/{PG_VERSION}/bin")


def _as_postgres(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return pg("runuser", "-u", "postgres", "--", *args, timeout=timeout)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Standby:
    """A streaming replica of the cluster at `primary_port`, in a directory of its own (under /tmp: the
    postgres user must reach it), on a free port; `start()` makes it (pg_basebackup), `drop()` removes it.

    pg_basebackup copies the primary's data directory and `-R` writes standby.signal and the
    primary_conninfo that make it stream once started. A Debian cluster keeps postgresql.conf and
    pg_hba.conf in /etc, so the copy gets two small ones of its own: loopback only, trust (a test
    cluster with no data worth a password), its socket in its own directory. No pg_createcluster: its
    initdb would be thrown away, and a replica is only ever a copy of the primary of now."""

    def __init__(self, *, primary_port: int) -> None:
        self.primary_port = primary_port
        self.directory = Path(tempfile.mkdtemp(prefix="llmlog-standby-"))
        self.data = self.directory / "data"
        self.port = free_port()
        shutil.chown(self.directory, "postgres", "postgres")

    def create(self) -> None:
        copied = _as_postgres(
            str(PG_BIN / "pg_basebackup"),
            "-h", "127.0.0.1", "-p", str(self.primary_port), "-U", "postgres",
            "-D", str(self.data), "-R", "-X", "stream", "-c", "fast",
        )  # fmt: skip
        if copied.returncode != 0:
            raise RuntimeError(f"pg_basebackup: {copied.stderr[-1000:]}")
        settings = (
            f"port = {self.port}\nlisten_addresses = '127.0.0.1'\n"
            f"unix_socket_directories = '{self.directory}'\nhot_standby = on\n"
        )
        (self.data / "postgresql.conf").write_text(settings)
        (self.data / "pg_hba.conf").write_text("local all all trust\nhost all all 127.0.0.1/32 trust\n")
        for name in ("postgresql.conf", "pg_hba.conf"):
            shutil.chown(self.data / name, "postgres", "postgres")
        self.start()

    def start(self) -> None:
        log = self.directory / "postgresql.log"
        done = _as_postgres(
            str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-l", str(log), "-w", "-t", "60", "start"
        )
        if done.returncode != 0:
            raise RuntimeError(f"standby start: {done.stdout}{done.stderr}{log.read_text()[-2000:]}")

    def stop(self, mode: str = "fast") -> None:
        _as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")

    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def drop(self) -> None:
        if self.running():
            self.stop("immediate")
        shutil.rmtree(self.directory, ignore_errors=True)

    def url(self, database: str) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/{database}"


def wait_until_streaming(*, primary_url: str, standby_url: str, timeout: float = 30) -> None:
    """Until the standby has replayed everything the primary has flushed."""
    deadline = time.monotonic() + timeout
    with psycopg.connect(primary_url, autocommit=True) as primary:
        target = primary.execute("SELECT pg_current_wal_flush_lsn()").fetchone()[0]
        while True:
            try:
                with psycopg.connect(standby_url, autocommit=True, connect_timeout=2) as standby:
                    done = standby.execute("SELECT pg_last_wal_replay_lsn() >= %s", [target]).fetchone()[0]
                if done:
                    return
            except psycopg.OperationalError:  # still starting
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("the standby did not catch up with the primary")
            time.sleep(0.1)


def manage(*args: str, database_url: str) -> str:
    """`manage.py` with the test settings on another database; its output."""
    env = dict(os.environ, DJANGO_SETTINGS_MODULE="tests.settings", DATABASE_URL=database_url)
    env.pop("DATABASE_REPLICA_URLS", None)
    done = subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout
