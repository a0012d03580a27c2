import argparse
from datetime import date

from django.core.management.base import BaseCommand, CommandError, CommandParser

from llmlog.backup import BACKUP_BATCH_SIZE, backup_accounted_llmusage


def day(value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a day as YYYY-MM-DD, got {value!r}") from None


def positive_int(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {value!r}")
    return number


class Command(BaseCommand):
    help = (
        "Move accounted and skipped records of past days from llmusage to llmusage_history (the nightly "
        "job). Pending and failed records stay. Safe to rerun, to kill, and to run twice at once."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--before", type=day, help="Move records with use_date before this day (default: today)."
        )
        parser.add_argument(
            "--batch-size",
            type=positive_int,
            default=BACKUP_BATCH_SIZE,
            help=f"Records moved per transaction (default {BACKUP_BATCH_SIZE}).",
        )
        parser.add_argument("--dry-run", action="store_true", help="Count what would move; move nothing.")

    def handle(self, *args, before: date | None, batch_size: int, dry_run: bool, **options) -> None:
        try:
            counts = backup_accounted_llmusage(before=before, batch_size=batch_size, dry_run=dry_run)
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        left = f"left in llmusage: {counts['pending_left']} pending, {counts['failed_left']} failed"
        if dry_run:
            self.stdout.write(
                f"Dry run: {counts['would_move']} records with use_date before {counts['before']} "
                f"would move to llmusage_history; {left}."
            )
        else:
            self.stdout.write(
                f"Moved {counts['moved']} records with use_date before {counts['before']} to "
                f"llmusage_history in {counts['batches']} batches; {left}."
            )
