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
import subprocess
import sys
import time
import tracemalloc
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import ROOT, Figure, markdown_table, setup_django  # noqa: E402


def _status_kib(name: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(name + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {name} in /proc/self/status")


def reset_peak_rss() -> int:
    """Reset this process's peak RSS to its current RSS (Linux: clear_refs 5), so the peak measured
    next is the backup's and not Django's start-up; returns the current RSS in KiB."""
    Path("/proc/self/clear_refs").write_text("5")
    return _status_kib("VmRSS")


def peak_rss() -> int:
    return _status_kib("VmHWM")


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
    done = subprocess.run(
        [
            sys.executable,
            __file__,
            "--child",
            "--before",
            before.isoformat(),
            "--batch-size",
            str(batch_size),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"backup subprocess failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


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
    from benchmarks.common import fill_usage

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


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_000_000, help="records in llmusage")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--share", type=float, default=0.1, help="share of the table the night moves")
    parser.add_argument("--batch-size", type=int, default=None, help="default: the app's BACKUP_BATCH_SIZE")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--before", type=date.fromisoformat, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.before, args.batch_size)
        return
    if args.repeat < 3:
        parser.error("--repeat must be at least 3")
    if not 0 < args.share <= 1:
        parser.error("--share must be in (0, 1]")

    setup_django()
    from django.db import connection

    from llmlog.backup import BACKUP_BATCH_SIZE, MOVABLE, usage_columns

    batch_size = args.batch_size or BACKUP_BATCH_SIZE
    cols = ", ".join(connection.ops.quote_name(column) for column in usage_columns())

    print(f"preparing {args.rows:,} records...", file=sys.stderr, flush=True)
    started = time.perf_counter()
    prepare(args.rows)
    records = max(round(args.rows * args.share), 2)
    before, small_before = mark_night(records, max(records // 10, 1))
    execute("VACUUM ANALYZE llmusage")
    night, small = movable(before), movable(small_before)
    print(
        f"the night moves {night:,} records (before {before}), the small move {small:,}; "
        f"prepared in {time.perf_counter() - started:.0f}s",
        file=sys.stderr,
        flush=True,
    )

    def put_back() -> None:
        """The moved records back in llmusage as they were (accounted), history empty: the start of each
        measurement. VACUUM clears the moved records' dead tuples, as autovacuum would overnight; no
        ANALYZE: the table holds the same records."""
        execute(f"INSERT INTO llmusage ({cols}) SELECT {cols} FROM llmusage_history")
        execute("TRUNCATE llmusage_history")
        execute("VACUUM llmusage")

    def timed_put_back() -> None:
        started = time.perf_counter()
        put_back()
        print(f"  put back in {time.perf_counter() - started:.1f}s", file=sys.stderr, flush=True)

    raw_move = f"""
        WITH moved AS (
            DELETE FROM llmusage WHERE accounting_status = ANY(%s) AND use_date < %s RETURNING {cols}
        )
        INSERT INTO llmusage_history ({cols}, backup_time) SELECT {cols}, now() FROM moved
    """
    statuses = [str(status) for status in MOVABLE]

    rate = Figure(
        f"backup: move {night:,} accounted records (2 days) out of {args.rows:,} (batches of {batch_size:,})",
        "rows/s",
        target="≥ 0.50",
    )
    rss_big = Figure(f"backup peak memory, {night:,} records (RSS growth)", "KiB")
    rss_small = Figure(f"backup peak memory, {small:,} records (RSS growth)", "KiB")
    traced: dict[str, list[float]] = {"big": [], "small": []}

    for round_ in range(args.repeat):
        print(f"round {round_ + 1}/{args.repeat}", file=sys.stderr, flush=True)
        # Neither always goes first. The app goes first in the first round: it creates the history
        # partitions of the slice's months (llmlog.partitions), which TRUNCATE keeps for the raw move.
        steps = ["app", "raw"] if round_ % 2 == 0 else ["raw", "app"]
        for step in steps:
            if step == "app":
                result = run_child(before, batch_size)
                assert result["moved"] == night, result
                rate.app.append(night / result["seconds"])
                rss_big.app.append(result["rss_growth_kib"])
                traced["big"].append(result["traced_peak_kib"])
                seconds = result["seconds"]
            else:
                started = time.perf_counter()
                moved = execute(raw_move, [statuses, before])
                seconds = time.perf_counter() - started
                assert moved == night, moved
                rate.ceiling.append(night / seconds)
            print(f"  {step}: moved {night:,} in {seconds:.1f}s", file=sys.stderr, flush=True)
            assert movable(before) == 0 and scalar("SELECT count(*) FROM llmusage_history") == night
            timed_put_back()
        # The same backup over the earlier day alone: memory at a tenth of the size.
        result = run_child(small_before, batch_size)
        assert result["moved"] == small, result
        rss_small.app.append(result["rss_growth_kib"])
        traced["small"].append(result["traced_peak_kib"])
        timed_put_back()

    for figure, size in ((rss_big, "big"), (rss_small, "small")):
        figure.note = f"tracemalloc peak {max(traced[size]):,.0f} KiB"
    rate.note = "ceiling: one DELETE ... RETURNING → INSERT ... SELECT statement"
    print(markdown_table([rate, rss_big, rss_small]))


if __name__ == "__main__":
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    main()
