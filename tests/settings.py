"""Settings for the test run: the app's own settings with the few things a test needs."""

import os

os.environ.setdefault("DJANGO_SECRET_KEY", "tests-only-secret-key")

from config.settings import *  # noqa: E402,F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # fast logins in tests
