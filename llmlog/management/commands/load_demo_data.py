import time

from django.core.management.base import BaseCommand, CommandParser

from llmlog.demo import load_demo_data


class Command(BaseCommand):
    help = "Load realistic synthetic usage (orgs, users, models, both statuses) over the last days."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--rows", type=int, default=10_000)
        parser.add_argument("--days", type=int, default=30)
        parser.add_argument("--seed", type=int, default=7, help="Same seed, same data (ids aside).")

    def handle(self, *args, rows: int, days: int, seed: int, **options) -> None:
        started = time.perf_counter()
        written = load_demo_data(rows=rows, days=days, seed=seed)
        elapsed = time.perf_counter() - started
        rate = written / elapsed if elapsed else 0
        self.stdout.write(f"Loaded {written} usage records in {elapsed:.1f}s ({rate:,.0f} rows/s).")
