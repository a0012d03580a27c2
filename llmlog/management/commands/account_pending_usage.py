import json

from django.core.management.base import BaseCommand, CommandError, CommandParser

from llmlog.posting import DEFAULT_BATCH_SIZE, account_pending_usage


class Command(BaseCommand):
    help = "Post pending usage records to the accounting ledger, batch after batch, until none is left."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE)
        parser.add_argument("--max-batches", type=int, default=None, help="Stop after this many batches.")

    def handle(self, *args, batch_size: int, max_batches: int | None, **options) -> None:
        if batch_size < 1:
            raise CommandError("--batch-size must be at least 1")
        if max_batches is not None and max_batches < 1:
            raise CommandError("--max-batches must be at least 1")
        counts = account_pending_usage(batch_size=batch_size, max_batches=max_batches)
        self.stdout.write(json.dumps(counts))
