"""What every benchmark does first: its command line (the module docstring as the help), and Django set
up on the benchmark database (BENCH_DATABASE_URL, created when missing). ROOT is the checkout.
"""

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/llmlog_bench"


def setup_django(*, migrate: bool = True) -> None:
    """Point Django at the benchmark database (BENCH_DATABASE_URL, created when missing) and set it up;
    migrate=False in a helper process whose parent has migrated (saves a second or two per process)."""
    sys.path.insert(0, str(ROOT))
    url = os.environ.get("BENCH_DATABASE_URL", DEFAULT_DATABASE_URL)
    os.environ["DATABASE_URL"] = url
    os.environ.setdefault("DJANGO_SECRET_KEY", "benchmark-only")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    _create_database(url)
    import django

    django.setup()
    if not migrate:
        return
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def bench_parser(description: str) -> argparse.ArgumentParser:
    """A benchmark's command line, its module docstring as the help."""
    return argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )


def rows_parser(description: str, *, rows_help: str) -> argparse.ArgumentParser:
    """The flags of a benchmark on a table of --rows records, measured --repeat times."""
    parser = bench_parser(description)
    parser.add_argument("--rows", type=int, default=1_000_000, help=rows_help)
    parser.add_argument("--repeat", type=int, default=3)
    return parser


def query_data_parser(description: str, *, repeat: int) -> argparse.ArgumentParser:
    """The flags of the benchmarks that read bench_query's data set (query, dialects, admin, clickhouse):
    its size, the measurements per figure, and a reload even when the data is there."""
    parser = bench_parser(description)
    parser.add_argument("--rows", type=int, default=1_000_000, help="usage records, hot and history")
    parser.add_argument("--repeat", type=int, default=repeat, help="measurements per figure (at least 3)")
    parser.add_argument("--reload", action="store_true", help="reload the data even if it is there")
    return parser


def _create_database(url: str) -> None:
    import psycopg

    name = url.rsplit("/", 1)[-1].split("?")[0]
    admin_url = url.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
            conn.execute(f'CREATE DATABASE "{name}"')
