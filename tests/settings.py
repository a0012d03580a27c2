"""Settings for the test run: the app's own settings with the few things a test needs."""

import os
from pathlib import Path

os.environ.setdefault("DJANGO_SECRET_KEY", "tests-only-secret-key")
# Tests keep their files (SQLite test database, embedded broker folders) apart from `make run`'s.
os.environ.setdefault("LLMLOG_VAR_DIR", str(Path(__file__).resolve().parent.parent / "var" / "test"))

from config.settings import *  # noqa: E402,F403
from config.settings import DATABASES, VAR_DIR  # noqa: E402

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # fast logins in tests

if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # On disk, not in memory, so that a real Celery worker in another process sees the same database.
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / "test-db.sqlite3")}

# Every test client calls from 127.0.0.1 and the cache outlives a test: the per-address limit on API-key
# failures would carry one test's revoked-key calls into the next. The tests of the limit turn it on.
LLMLOG_AUTH_FAILURE_RATE = None
