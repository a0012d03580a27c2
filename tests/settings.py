"""Settings for the test run: the app's own settings with the few things a test needs."""

import os
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

os.environ.setdefault("DJANGO_SECRET_KEY", "tests-only-secret-key")
# Tests keep their files (SQLite test database, embedded broker folders) apart from `make run`'s.
os.environ.setdefault("LLMLOG_VAR_DIR", str(Path(__file__).resolve().parent.parent / "var" / "test"))


def _apart_from_the_other_test_workers(worker: str) -> None:
    """`make test` runs pytest-xdist workers (gw0, gw1, ...) side by side. Each gets files of its own (the
    SQLite test database, the embedded broker's folders, the ClickHouse server's data) and, on Redis, a
    database of its own for the broker, its queues and the cache: worker n takes the configured database
    + n. Written into the environment, so that the processes a test starts (gunicorn, a Celery worker,
    make run) inherit them; done once, since those processes read these settings again."""
    if os.environ.get("LLMLOG_TEST_WORKER") == worker:
        return
    os.environ["LLMLOG_TEST_WORKER"] = worker
    os.environ["LLMLOG_VAR_DIR"] = str(Path(os.environ["LLMLOG_VAR_DIR"]) / worker)
    number = int(worker.removeprefix("gw"))
    for name in ("REDIS_URL", "CACHE_REDIS_URL"):
        if url := os.environ.get(name):
            parts = urlsplit(url)
            database = int(parts.path.strip("/") or 0) + number
            os.environ[name] = urlunsplit(parts._replace(path=f"/{database}"))


if os.environ.get("PYTEST_XDIST_WORKER"):
    _apart_from_the_other_test_workers(os.environ["PYTEST_XDIST_WORKER"])

from config.settings import *  # noqa: E402,F403
from config.settings import DATABASES, VAR_DIR  # noqa: E402

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # fast logins in tests

if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # On disk, not in memory, so that a real Celery worker in another process sees the same database.
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / "test-db.sqlite3")}

# Every test client calls from 127.0.0.1 and the cache outlives a test: the per-address limit on API-key
# failures would carry one test's revoked-key calls into the next. The tests of the limit turn it on.
LLMLOG_AUTH_FAILURE_RATE = None
