from django.core.management.base import BaseCommand, CommandParser

from llmlog.filters import InvalidFilter, parse_time
from llmlog.rollups import build_usage_rollups, usage_rollups_rebuild


class Command(BaseCommand):
    help = (
        "Build the hourly usage rollups of every settled hour not built yet, and rebuild the hours that "
        "late records landed in (what the periodic job does). With --start/--end: rebuild those hours."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--start", help="Rebuild from this time (ISO 8601 or unix seconds), with --end.")
        parser.add_argument("--end", help="Rebuild up to this time (exclusive), with --start.")

    def handle(self, *args, start: str | None, end: str | None, **options) -> None:
        if start or end:
            if not (start and end):
                self.stderr.write("--start and --end go together.")
                raise SystemExit(2)
            try:
                start_time, end_time = parse_time(start, name="--start"), parse_time(end, name="--end")
            except InvalidFilter as exc:
                self.stderr.write(str(exc))
                raise SystemExit(2) from None
            buckets = usage_rollups_rebuild(start=start_time, end=end_time)
            self.stdout.write(
                f"Rebuilt {start_time:%Y-%m-%d %H:00} to {end_time:%Y-%m-%d %H:%M}: {buckets} buckets."
            )
            return
        counts = build_usage_rollups()
        self.stdout.write(
            f"Built {counts['hours']} hours and rebuilt {counts['late_hours']} with late records "
            f"({counts['buckets']} buckets); rollups now reach {counts['built_through']}."
        )
