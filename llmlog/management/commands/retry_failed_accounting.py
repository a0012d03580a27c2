import json

from django.core.management.base import BaseCommand, CommandError, CommandParser

from llmlog.posting import RETRY_BATCH_SIZE, retry_failed_accounting


class Command(BaseCommand):
    help = (
        "Retry failed postings: those whose backoff has passed, every open one (--all), "
        "or the failures given by --id whatever their status."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--id", dest="ids", type=int, action="append", help="A failure id; repeat for more."
        )
        parser.add_argument("--all", action="store_true", help="Every open failure, ignoring the backoff.")
        parser.add_argument("--batch-size", type=int, default=RETRY_BATCH_SIZE)

    def handle(self, *args, ids: list[int] | None, all: bool, batch_size: int, **options) -> None:  # noqa: A002
        if ids and all:
            raise CommandError("--id and --all do not go together")
        if batch_size < 1:
            raise CommandError("--batch-size must be at least 1")
        result = retry_failed_accounting(ids=ids, force=all, batch_size=batch_size, by="manage.py")
        self.stdout.write(json.dumps(result.counts))
