from datetime import date

from django.core.management.base import BaseCommand, CommandParser

from llmlog.backup import PURGE_BATCH_SIZE, purge_history
from llmlog.management.commands.backup_accounted_llmusage import day, positive_int


class Command(BaseCommand):
    help = (
        "Delete llmusage_history records older than LLMLOG_HISTORY_RETENTION_DAYS (by use_date), in short "
        "batches. Without --before it does nothing while the retention is unset."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--before",
            type=day,
            help="Delete history with use_date before this day (default: today minus the retention).",
        )
        parser.add_argument(
            "--batch-size",
            type=positive_int,
            default=PURGE_BATCH_SIZE,
            help=f"Records deleted per transaction (default {PURGE_BATCH_SIZE}).",
        )
        parser.add_argument("--dry-run", action="store_true", help="Count what would go; delete nothing.")

    def handle(self, *args, before: date | None, batch_size: int, dry_run: bool, **options) -> None:
        counts = purge_history(before=before, batch_size=batch_size, dry_run=dry_run)
        if counts["before"] is None:
            self.stdout.write("LLMLOG_HISTORY_RETENTION_DAYS is unset and no --before given: history kept.")
        elif dry_run:
            self.stdout.write(
                f"Dry run: {counts['would_purge']} history records with use_date before {counts['before']} "
                "would be deleted."
            )
        else:
            self.stdout.write(
                f"Deleted {counts['purged']} history records with use_date before {counts['before']} "
                f"in {counts['batches']} batches."
            )
