import secrets

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandParser

from llmlog.demo import load_demo_data
from llmlog.keys import api_key_create, api_key_revoke
from llmlog.models import ApiKey, LLMUsage

RUN_KEY_NAME = "make run"


class Command(BaseCommand):
    help = "For `make run`: demo data into an empty database, an admin login and a platform API key."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--demo-rows", type=int, default=20_000)
        parser.add_argument("--username", default="admin")

    def handle(self, *args, demo_rows: int, username: str, **options) -> None:
        if demo_rows and not LLMUsage.objects.exists():
            written = load_demo_data(rows=demo_rows)
            self.stdout.write(f"Loaded {written} demo usage records.")

        password = secrets.token_urlsafe(12)
        user, _ = get_user_model().objects.get_or_create(username=username)
        user.is_staff = user.is_superuser = True
        user.set_password(password)
        user.save()

        # One key for the running app: the previous run's key stops working.
        for old in ApiKey.objects.filter(name=RUN_KEY_NAME, revoked_at__isnull=True):
            api_key_revoke(key=old)
        _, raw = api_key_create(
            name=RUN_KEY_NAME, role=ApiKey.Role.ADMIN, scopes=ApiKey.Scope.values, userorgid=""
        )
        self.stdout.write(
            "\n".join(
                [
                    "",
                    "llmlog is starting on http://127.0.0.1:8000",
                    f"  admin:   http://127.0.0.1:8000/admin/  user {username}  password {password}",
                    "  API docs: http://127.0.0.1:8000/api/docs/",
                    f"  API key (platform, ingest + read): {raw}",
                    "",
                ]
            )
        )
