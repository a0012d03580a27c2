"""`make run`'s set-up: demo data into an empty database, an admin login and a platform API key.

The login and the key are kept in `var/run-credentials.json` (readable by the owner only) and printed
again at every start, so a gateway configured with the printed key keeps working across restarts. Keys are
stored hashed in the database: the file is the only place the raw key lives. New ones are made when the
file is missing, when what it holds no longer works (the key revoked, the password changed, another
database), or when asked: `--reset` (`make run RESET=1`), which also revokes the previous key.
"""

import json
import os
import secrets
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandParser

from llmlog.demo import load_demo_data
from llmlog.keys import api_key_create, api_key_lookup, api_key_revoke
from llmlog.models import ApiKey, LLMUsage

RUN_KEY_NAME = "make run"


def credentials_path() -> Path:
    return Path(settings.VAR_DIR) / "run-credentials.json"


def _read_credentials(path: Path) -> dict[str, Any] | None:
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return saved if isinstance(saved, dict) else None


def _still_valid(saved: dict[str, Any], *, username: str) -> bool:
    """The saved login and key work against this database (not a file left from another one)."""
    if saved.get("username") != username:
        return False
    user = get_user_model().objects.filter(username=username, is_staff=True, is_active=True).first()
    if user is None or not user.check_password(str(saved.get("password", ""))):
        return False
    key = api_key_lookup(str(saved.get("api_key", "")))
    return key is not None and key.revoked_at is None and key.name == RUN_KEY_NAME


def _write_credentials(path: Path, saved: dict[str, str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # Created owner-only before the secret is written, so it is never readable by others.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as file:
        json.dump(saved, file)
    os.chmod(path, 0o600)


def run_credentials_ensure(*, username: str, reset: bool) -> tuple[dict[str, str], bool]:
    """The login and key `make run` prints: the saved ones while they work, new ones otherwise or on
    `reset`. Returns them and whether they are new."""
    path = credentials_path()
    saved = None if reset else _read_credentials(path)
    if saved is not None and _still_valid(saved, username=username):
        return saved, False

    password = secrets.token_urlsafe(12)
    user, _ = get_user_model().objects.get_or_create(username=username)
    user.is_staff = user.is_superuser = user.is_active = True
    user.set_password(password)
    user.save()
    # One key for `make run`: the previous one (if any) stops working.
    for old in ApiKey.objects.filter(name=RUN_KEY_NAME, revoked_at__isnull=True):
        api_key_revoke(key=old)
    _, raw = api_key_create(
        name=RUN_KEY_NAME, role=ApiKey.Role.ADMIN, scopes=ApiKey.Scope.values, userorgid=""
    )
    fresh = {"username": username, "password": password, "api_key": raw}
    _write_credentials(path, fresh)
    return fresh, True


class Command(BaseCommand):
    help = (
        "For `make run`: demo data into an empty database, and the admin login and platform API key kept "
        "in var/run-credentials.json (new ones with --reset)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--demo-rows", type=int, default=20_000)
        parser.add_argument("--username", default="admin")
        parser.add_argument(
            "--reset", action="store_true", help="A new admin password and API key; the old key is revoked."
        )
        parser.add_argument("--base-url", default="http://127.0.0.1:8000")

    def handle(self, *args, demo_rows: int, username: str, reset: bool, base_url: str, **options) -> None:
        if demo_rows and not LLMUsage.objects.exists():
            written = load_demo_data(rows=demo_rows)
            self.stdout.write(f"Loaded {written} demo usage records.")

        credentials, fresh = run_credentials_ensure(username=username, reset=reset)
        kept = "new" if fresh else f"kept from {credentials_path()}; `make run RESET=1` makes new ones"
        self.stdout.write(
            "\n".join(
                [
                    "",
                    f"llmlog is starting on {base_url}  (Ctrl-C stops it)",
                    f"  admin:    {base_url}/admin/  user {username}  password {credentials['password']}",
                    f"  API docs: {base_url}/api/docs/    health: {base_url}/healthz",
                    f"  login and key: {kept}",
                    "  logs:     web on this terminal, worker in var/celery.log (JSON lines)",
                    f"  API key (platform, ingest + read): {credentials['api_key']}",
                    "",
                ]
            )
        )
