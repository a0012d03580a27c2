from django.core.management.base import BaseCommand, CommandError, CommandParser

from llmlog.keys import api_key_create
from llmlog.models import ApiKey


class Command(BaseCommand):
    help = "Create an API key. The key is printed once, alone on the last line."

    def add_arguments(self, parser: CommandParser) -> None:
        owner = parser.add_mutually_exclusive_group(required=True)
        owner.add_argument("--org", help="The org (userorgid) the key belongs to; it sees only that org.")
        owner.add_argument("--platform", action="store_true", help="A platform-wide key: sees every org.")
        parser.add_argument("--role", choices=ApiKey.Role.values, default=ApiKey.Role.MEMBER)
        parser.add_argument(
            "--scope",
            dest="scopes",
            action="append",
            choices=ApiKey.Scope.values,
            help="Repeat for several; default: ingest and read.",
        )
        parser.add_argument("--name", default="", help="A label for operators.")

    def handle(self, *args, org: str | None, platform: bool, role: str, scopes, name: str, **options) -> None:
        if org is not None and not org.strip():
            raise CommandError("--org needs a non-empty org id")
        try:
            key, raw = api_key_create(
                userorgid="" if platform else org.strip(),
                role=role,
                scopes=scopes or ApiKey.Scope.values,
                name=name,
            )
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        owner = "platform-wide" if key.is_platform else f"org {key.userorgid}"
        self.stderr.write(
            f"Created API key {key.key_prefix}… ({owner}, role {key.role}, scopes {key.scopes})."
        )
        self.stderr.write("Store it now: it is not kept and cannot be shown again.")
        self.stdout.write(raw)
