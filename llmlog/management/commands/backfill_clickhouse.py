from datetime import date

from django.core.management.base import BaseCommand, CommandError, CommandParser

from llmlog.clickhouse.client import ClickHouseUnavailable
from llmlog.clickhouse.mirror import clickhouse_backfill
from llmlog.management.commands.backup_accounted_llmusage import day


class Command(BaseCommand):
    help = (
        "Load the history already in PostgreSQL into ClickHouse (CLICKHOUSE_URL): each day whose count or "
        "sums differ is reloaded whole, so a rerun loads nothing. Without --start/--end, every day, and "
        "the mirror is then in sync (reads use ClickHouse)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--start", type=day, help="First use_date to check (default: the oldest).")
        parser.add_argument("--end", type=day, help="Last use_date to check (default: the newest).")

    def handle(self, *args, start: date | None, end: date | None, **options) -> None:
        if start and end and start > end:
            raise CommandError(f"--start ({start}) is after --end ({end})")
        try:
            counts = clickhouse_backfill(start=start, end=end)
        except ClickHouseUnavailable as exc:
            raise CommandError(f"ClickHouse: {exc}") from exc
        rollups = counts["rollups"]
        self.stdout.write(
            f"Checked {counts['days_checked']} days, reloaded {counts['days_reloaded']} "
            f"({counts['loaded']} records); in sync through {counts['synced_through']}. "
            f"Rollups: checked {rollups['days_checked']} UTC days, replaced {rollups['days_replaced']} "
            f"({rollups['loaded']} buckets)."
        )
