"""What every benchmark shares: Django set-up on the benchmark database, timing, and the report table.

Each figure is measured at least 3 times; the table shows the median with min and max, beside the
raw-SQL ceiling of the same operation measured in the same run, and their ratio.
"""

import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/llmlog_bench"


def setup_django() -> None:
    """Point Django at the benchmark database (BENCH_DATABASE_URL, created when missing) and set it up."""
    sys.path.insert(0, str(ROOT))
    url = os.environ.get("BENCH_DATABASE_URL", DEFAULT_DATABASE_URL)
    os.environ["DATABASE_URL"] = url
    os.environ.setdefault("DJANGO_SECRET_KEY", "benchmark-only")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    _create_database(url)
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def _create_database(url: str) -> None:
    import psycopg

    name = url.rsplit("/", 1)[-1].split("?")[0]
    admin_url = url.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
            conn.execute(f'CREATE DATABASE "{name}"')


def timed(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


@dataclass
class Figure:
    """One line of the report: the app's figure beside its raw-SQL ceiling."""

    name: str
    unit: str  # "rows/s" (higher is better) or "ms" (lower is better)
    app: list[float] = field(default_factory=list)
    ceiling: list[float] = field(default_factory=list)
    target: str = ""
    note: str = ""

    @property
    def ratio(self) -> float | None:
        """app / ceiling: for rows/s the share of the ceiling reached, for ms how many times slower."""
        if not self.app or not self.ceiling or not statistics.median(self.ceiling):
            return None
        return statistics.median(self.app) / statistics.median(self.ceiling)

    def row(self) -> list[str]:
        def spread(values: list[float]) -> str:
            if not values:
                return "-"
            return f"{statistics.median(values):,.2f} ({min(values):,.2f}–{max(values):,.2f})"

        ratio = self.ratio
        return [
            self.name,
            f"{spread(self.app)} {self.unit}",
            f"{spread(self.ceiling)} {self.unit}" if self.ceiling else "-",
            f"{ratio:.2f}" if ratio is not None else "-",
            self.target,
            self.note,
        ]


HEADER = ["figure", "llmlog: median (min–max)", "raw SQL ceiling", "ratio", "target", "note"]


def markdown_table(figures: list[Figure]) -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(figure.row()) + " |" for figure in figures]
    return "\n".join(lines)
