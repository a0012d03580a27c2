"""DATABASES from DATABASE_URL and DATABASE_REPLICA_URLS (see README "Configuration")."""

from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from config.env import env_bool, env_int, env_list, env_str

POSTGRESQL = "django.db.backends.postgresql"
SQLITE = "django.db.backends.sqlite3"


def _database(url: str) -> dict:
    return dj_database_url.parse(
        url, conn_max_age=env_int("DATABASE_CONN_MAX_AGE", 60, minimum=0), conn_health_checks=True
    )


def _postgresql_options(database: dict) -> None:
    """The options of every PostgreSQL alias, the primary's and each replica's."""
    # Django's backend, with a health check that asks the socket instead of the server (no round trip).
    database["ENGINE"] = "llmlog.backends.postgresql"
    # llmlog.db's cursors prepare the hottest statements (get-item, RPM/TPM, list pages, single-record
    # ingest) on each connection; Django turns psycopg's prepared statements off unless asked, and its
    # own cursors never prepare. Off behind a pooler in transaction mode without prepared statement
    # support (PgBouncer before 1.21, or max_prepared_statements = 0).
    database.setdefault("OPTIONS", {})["prepare_threshold"] = (
        5 if env_bool("DATABASE_PREPARED_STATEMENTS", True) else None
    )
    # Connections are per thread in Django. By default each of gunicorn's threads (config/gunicorn.py)
    # keeps its own for DATABASE_CONN_MAX_AGE seconds: no checkout per request, and the statements
    # llmlog.db prepared stay prepared. DATABASE_URL's `?pool=true` asks for Django's psycopg pool
    # instead (one per process, shared by its threads: fewer connections when threads sit idle). Django
    # refuses a pool with persistent connections, and psycopg_pool's default of 4 connections would
    # keep a process's other threads waiting: sized here to the threads (WEB_THREADS), opened on demand.
    if database["OPTIONS"].get("pool") is True:
        database["CONN_MAX_AGE"] = 0
        database["OPTIONS"]["pool"] = {
            "min_size": 1,
            "max_size": env_int("WEB_THREADS", 8, minimum=1),
        }


def _sqlite_options(database: dict) -> None:
    # WAL lets the web process read while the worker writes; the timeout rides out short write locks.
    database["OPTIONS"] = {
        "timeout": 20,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }


def _replicas(primary: dict) -> dict[str, dict]:
    """Read replicas (llmlog.replicas): streaming replicas of the primary, as aliases replica1, replica2…

    Lists, counts, stats, search, the dialects and the dashboard read one that lags at most
    LLMLOG_REPLICA_MAX_LAG_SECONDS; everything else reads the primary. A replica that does not answer is
    given up on after connect_timeout (libpq's smallest: 2 s) and skipped for a while.
    """
    replicas = {}
    for number, url in enumerate(env_list("DATABASE_REPLICA_URLS", []), start=1):
        replica = _database(url)
        if replica["ENGINE"] != POSTGRESQL or primary["ENGINE"] == SQLITE:
            raise ImproperlyConfigured(
                "DATABASE_REPLICA_URLS must be PostgreSQL URLs (postgres://...) of replicas of a "
                f"PostgreSQL DATABASE_URL; replica {number} is not"
            )
        _postgresql_options(replica)
        replica["OPTIONS"].setdefault("connect_timeout", 2)
        replica["TEST"] = {"MIRROR": "default"}  # a test run never creates a database on a replica
        replicas[f"replica{number}"] = replica
    return replicas


def databases(var_dir: Path) -> dict[str, dict]:
    """The primary ("default": DATABASE_URL, else SQLite under var_dir) and the replicas after it."""
    primary = _database(env_str("DATABASE_URL") or f"sqlite:///{var_dir / 'llmlog.sqlite3'}")
    if primary["ENGINE"] == POSTGRESQL:
        _postgresql_options(primary)
    replicas = _replicas(primary)
    if primary["ENGINE"] == SQLITE:
        _sqlite_options(primary)
    return {"default": primary, **replicas}
