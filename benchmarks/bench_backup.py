"""The nightly backup: rows/s moving a night's records out of a big hot table, and its peak memory.

    python benchmarks/bench_backup.py --rows 1000000 [--repeat 3] [--share 0.1] [--batch-size 10000]

Data: llmusage holds --rows demo records (`load_demo_data`; demo records an earlier benchmark of the
same run loaded are reused, the records those benchmarks wrote themselves are deleted first) and history
is emptied. The night's move is about --share of the table (a tenth): the records with the lowest ids,
marked accounted and dated the two days before all the others, as a hot table filled in time order holds
its oldest days (ids are uuid7, growing with time; the demo's times are random, hence the new dates). A
tenth of them get the earlier of the two days. The move is every accounted or skipped record of a day
before the cut-off `before`; the other records (later days, pending or not) stay.

Each round moves that slice twice, once with `backup_accounted_llmusage(before=...)` (in a
subprocess, so its memory is its own) and once with the raw-SQL ceiling, one statement over the slice:
    WITH moved AS (DELETE FROM llmusage WHERE ... RETURNING ...) INSERT INTO llmusage_history SELECT ...
alternating which goes first, and puts the slice back in between (INSERT ... SELECT from history,
TRUNCATE history, VACUUM llmusage), so both start from the same table. Putting back only a slice, not the
whole table, is what keeps this benchmark to a few minutes at a million rows.
Peak memory is how far the subprocess's peak RSS rose above its RSS at the start of the backup (the
peak is reset first, so Django's start-up does not hide it), and tracemalloc's peak of Python
allocations, for the slice and for a move a tenth its size (its earlier day alone): flat memory means the
two sizes show about the same.
"""

import argparse
import json
import os
import sys
import time
import tracemalloc
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.data import fill_usage  # noqa: E402
from benchmarks.processes import peak_rss, reset_peak_rss, run_json_child  # noqa: E402
from benchmarks.report import Figure, markdown_table  # noqa: E402
from benchmarks.startup import rows_parser, setup_django  # noqa: E402


def child(before: date, batch_size: int) -> None:
    """Run one backup in this process and print what it took as JSON."""
    setup_django(migrate=False)  # the parent has migrated
    from django.db import connection

    from llmlog.backup import backup_accounted_llmusage

    connection.ensure_connection()
    baseline = reset_peak_rss()
    tracemalloc.start()
    started = time.perf_counter()
    counts = backup_accounted_llmusage(before=before, batch_size=batch_size)
    seconds = time.perf_counter() - started
    _, traced_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    result = {
        "moved": counts["moved"],
        "seconds": seconds,
        "rss_growth_kib": peak_rss() - baseline,
        "traced_peak_kib": traced_peak / 1024,
    }
    print(json.dumps(result))


def run_child(before: date, batch_size: int) -> dict:
    return run_json_child(
        [__file__, "--child", "--before", before.isoformat(), "--batch-size", str(batch_size)], what="backup"
    )


def execute(sql: str, params: list | dict | None = None) -> int:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.rowcount


def scalar(sql: str, params: list | None = None) -> Any:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchone()[0]


def prepare(rows: int) -> None:
    """--rows demo records in llmusage and none of another benchmark's, an empty history."""
    # Whatever is not demo data was written by another benchmark (ingest, adapters, load): delete it
    # here, so that fill_usage counts only demo records and tops them up to --rows.
    execute("DELETE FROM llmusage WHERE transno NOT LIKE 'demo-%'")
    fill_usage(rows=rows, vacuum=False)  # vacuumed once the slice is marked, below
    execute("TRUNCATE llmusage_history")


def mark_night(records: int, small: int) -> tuple[date, date]:
    """Make the `records` lowest ids the night's move: accounted, dated the two days before the other
    records' first day, the first `small` of them the earlier day. Returns the cut-offs `before` of the
    night's move and of the small move (its earlier day alone)."""
    from django.utils import timezone

    last_id = scalar("SELECT id FROM llmusage ORDER BY id OFFSET %s LIMIT 1", [records - 1])
    first_day = scalar("SELECT min(use_date) FROM llmusage WHERE id > %s", [last_id])
    first_day = first_day or timezone.localdate()  # the whole table moves
    early, late = first_day - timedelta(days=2), first_day - timedelta(days=1)

    def midnight(day: date) -> datetime:
        return timezone.make_aware(datetime.combine(day, datetime.min.time()))

    # Times grow with the id through each day, as a gateway's records arrive.
    execute(
        """
        WITH night AS (
            SELECT id, row_number() OVER (ORDER BY id) AS n FROM llmusage ORDER BY id LIMIT %(records)s
        )
        UPDATE llmusage SET
            use_date = CASE WHEN n <= %(small)s THEN %(early)s::date ELSE %(late)s::date END,
            use_time = CASE WHEN n <= %(small)s
                THEN %(early_start)s + (n - 1) * interval '1 day' / %(small)s
                ELSE %(late_start)s + (n - %(small)s - 1) * interval '1 day' / (%(records)s - %(small)s)
            END,
            accounting_status = CASE accounting_status WHEN 'pending' THEN 'accounted'
                ELSE accounting_status END,
            accounted_at = coalesce(accounted_at, now())
        FROM night WHERE llmusage.id = night.id
        """,
        {
            "records": records,
            "small": small,
            "early": early,
            "late": late,
            "early_start": midnight(early),
            "late_start": midnight(late),
        },
    )
    return first_day, late


def movable(before: date) -> int:
    from llmlog.backup import MOVABLE

    return scalar(
        "SELECT count(*) FROM llmusage WHERE accounting_status = ANY(%s) AND use_date < %s",
        [[str(status) for status in MOVABLE], before],
    )


@dataclass
class Night:
    """The night's move (records of a day before `before`) and the small move (before `small_before`),
    and how many records each moves."""

    before: date
    small_before: date
    records: int
    small_records: int


def prepare_night(rows: int, share: float) -> Night:
    """The table of --rows records, `share` of them the night's move, vacuumed and analyzed."""
    print(f"preparing {rows:,} records...", file=sys.stderr, flush=True)
    started = time.perf_counter()
    prepare(rows)
    records = max(round(rows * share), 2)
    before, small_before = mark_night(records, max(records // 10, 1))
    execute("VACUUM ANALYZE llmusage")
    night = Night(before, small_before, movable(before), movable(small_before))
    print(
        f"the night moves {night.records:,} records (before {before}), "
        f"the small move {night.small_records:,}; prepared in {time.perf_counter() - started:.0f}s",
        file=sys.stderr,
        flush=True,
    )
    return night


def put_back(cols: str) -> None:
    """The moved records back in llmusage as they were (accounted), history empty: the start of each
    measurement. VACUUM clears the moved records' dead tuples, as autovacuum would overnight; no
    ANALYZE: the table holds the same records."""
    started = time.perf_counter()
    execute(f"INSERT INTO llmusage ({cols}) SELECT {cols} FROM llmusage_history")
    execute("TRUNCATE llmusage_history")
    execute("VACUUM llmusage")
    print(f"  put back in {time.perf_counter() - started:.1f}s", file=sys.stderr, flush=True)


@dataclass
class BackupFigures:
    rate: Figure
    rss_big: Figure
    rss_small: Figure
    traced: dict[str, list[float]] = field(default_factory=lambda: {"big": [], "small": []})

    @classmethod
    def named(cls, night: Night, rows: int, batch_size: int) -> "BackupFigures":
        return cls(
            Figure(
                f"backup: move {night.records:,} accounted records (2 days) out of {rows:,} "
                f"(batches of {batch_size:,})",
                "rows/s",
                target="≥ 0.50",
            ),
            Figure(f"backup peak memory, {night.records:,} records (RSS growth)", "KiB"),
            Figure(f"backup peak memory, {night.small_records:,} records (RSS growth)", "KiB"),
        )

    def table(self) -> str:
        for figure, size in ((self.rss_big, "big"), (self.rss_small, "small")):
            figure.note = f"tracemalloc peak {max(self.traced[size]):,.0f} KiB"
        self.rate.note = "ceiling: one DELETE ... RETURNING → INSERT ... SELECT statement"
        return markdown_table([self.rate, self.rss_big, self.rss_small])


def app_move(night: Night, batch_size: int, figures: BackupFigures) -> float:
    """The night's move by `backup_accounted_llmusage`, in a process of its own: its seconds."""
    result = run_child(night.before, batch_size)
    assert result["moved"] == night.records, result
    figures.rate.app.append(night.records / result["seconds"])
    figures.rss_big.app.append(result["rss_growth_kib"])
    figures.traced["big"].append(result["traced_peak_kib"])
    return result["seconds"]


def raw_move(night: Night, cols: str, figures: BackupFigures) -> float:
    """The night's move as one statement, the ceiling: its seconds."""
    from llmlog.backup import MOVABLE

    started = time.perf_counter()
    moved = execute(
        f"""
        WITH moved AS (
            DELETE FROM llmusage WHERE accounting_status = ANY(%s) AND use_date < %s RETURNING {cols}
        )
        INSERT INTO llmusage_history ({cols}, backup_time) SELECT {cols}, now() FROM moved
    """,
        [[str(status) for status in MOVABLE], night.before],
    )
    seconds = time.perf_counter() - started
    assert moved == night.records, moved
    figures.rate.ceiling.append(night.records / seconds)
    return seconds


def measure_round(round_: int, night: Night, batch_size: int, cols: str, figures: BackupFigures) -> None:
    """The night's move by the app and by the ceiling, each put back after; then the small move."""
    # Neither always goes first. The app goes first in the first round: it creates the history
    # partitions of the slice's months (llmlog.partitions), which TRUNCATE keeps for the raw move.
    for step in ["app", "raw"] if round_ % 2 == 0 else ["raw", "app"]:
        seconds = app_move(night, batch_size, figures) if step == "app" else raw_move(night, cols, figures)
        print(f"  {step}: moved {night.records:,} in {seconds:.1f}s", file=sys.stderr, flush=True)
        assert movable(night.before) == 0 and scalar("SELECT count(*) FROM llmusage_history") == night.records
        put_back(cols)
    # The same backup over the earlier day alone: memory at a tenth of the size.
    result = run_child(night.small_before, batch_size)
    assert result["moved"] == night.small_records, result
    figures.rss_small.app.append(result["rss_growth_kib"])
    figures.traced["small"].append(result["traced_peak_kib"])
    put_back(cols)


def parse_args() -> argparse.Namespace:
    parser = rows_parser(__doc__, rows_help="records in llmusage")
    parser.add_argument("--share", type=float, default=0.1, help="share of the table the night moves")
    parser.add_argument("--batch-size", type=int, default=None, help="default: the app's BACKUP_BATCH_SIZE")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--before", type=date.fromisoformat, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return args
    if args.repeat < 3:
        parser.error("--repeat must be at least 3")
    if not 0 < args.share <= 1:
        parser.error("--share must be in (0, 1]")
    return args


def main() -> None:
    args = parse_args()
    if args.child:
        child(args.before, args.batch_size)
        return
    setup_django()
    from django.db import connection

    from llmlog.backup import BACKUP_BATCH_SIZE, usage_columns

    batch_size = args.batch_size or BACKUP_BATCH_SIZE
    cols = ", ".join(connection.ops.quote_name(column) for column in usage_columns())
    night = prepare_night(args.rows, args.share)
    figures = BackupFigures.named(night, args.rows, batch_size)
    for round_ in range(args.repeat):
        print(f"round {round_ + 1}/{args.repeat}", file=sys.stderr, flush=True)
        measure_round(round_, night, batch_size, cols, figures)
    print(figures.table())


if __name__ == "__main__":
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    main()
