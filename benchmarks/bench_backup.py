"""The nightly backup: rows/s moving --rows accounted records to history, and its peak memory.

    python benchmarks/bench_backup.py --rows 1000000 [--repeat 3] [--batch-size 10000]

Data: `load_demo_data`, then one UPDATE marks every record accounted and of a past day. Each round
moves them all, once with `backup_accounted_llmusage` (in a subprocess, so its memory is its own) and
once with the raw-SQL ceiling, one statement over the whole set:
    WITH moved AS (DELETE FROM llmusage WHERE ... RETURNING ...) INSERT INTO llmusage_history SELECT ...
and puts the rows back in between (with VACUUM ANALYZE, so both start from the same table).
Peak memory is how far the subprocess's peak RSS rose above its RSS at the start of the backup (the
peak is reset first, so Django's start-up does not hide it), and tracemalloc's peak of Python
allocations, at --rows and at a tenth of it: flat memory means the two sizes show about the same.
"""

import argparse
import json
import os
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

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


def child(batch_size: int) -> None:
    """Run one backup in this process and print what it took as JSON."""
    setup_django()
    from django.db import connection

    from llmlog.backup import backup_accounted_llmusage

    connection.ensure_connection()
    baseline = reset_peak_rss()
    tracemalloc.start()
    started = time.perf_counter()
    counts = backup_accounted_llmusage(batch_size=batch_size)
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


def run_child(batch_size: int) -> dict:
    done = subprocess.run(
        [sys.executable, __file__, "--child", "--batch-size", str(batch_size)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"backup subprocess failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=None, help="default: the app's BACKUP_BATCH_SIZE")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.batch_size)
        return

    setup_django()
    from django.db import connection
    from django.utils import timezone

    from llmlog.backup import BACKUP_BATCH_SIZE, MOVABLE, usage_columns
    from llmlog.demo import load_demo_data

    batch_size = args.batch_size or BACKUP_BATCH_SIZE
    cols = ", ".join(connection.ops.quote_name(column) for column in usage_columns())
    small = max(args.rows // 10, 1)

    def execute(sql: str, params: list | None = None) -> int:
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            return cursor.rowcount

    def vacuum() -> None:
        execute("VACUUM ANALYZE llmusage")
        execute("VACUUM ANALYZE llmusage_history")

    def put_back() -> None:
        """Every record back in llmusage, accounted, history empty: the start of each measurement."""
        execute(f"INSERT INTO llmusage ({cols}) SELECT {cols} FROM llmusage_history")
        execute("TRUNCATE llmusage_history")
        execute("UPDATE llmusage SET accounting_status = 'accounted' WHERE accounting_status <> 'accounted'")
        vacuum()

    def count(table: str) -> int:
        with connection.cursor() as cursor:
            cursor.execute(f"SELECT count(*) FROM {table}")
            return cursor.fetchone()[0]

    print(f"loading {args.rows} records...", file=sys.stderr, flush=True)
    execute("TRUNCATE llmusage, llmusage_history")
    load_demo_data(rows=args.rows)
    # Every record accounted and of a past day: all of them move.
    execute(
        "UPDATE llmusage SET accounting_status = 'accounted', accounted_at = use_time, "
        "use_date = use_date - 40"
    )
    vacuum()
    today = timezone.localdate()
    raw_move = f"""
        WITH moved AS (
            DELETE FROM llmusage WHERE accounting_status = ANY(%s) AND use_date < %s RETURNING {cols}
        )
        INSERT INTO llmusage_history ({cols}, backup_time) SELECT {cols}, now() FROM moved
    """
    movable = [str(status) for status in MOVABLE]

    rate = Figure(
        f"backup: move {args.rows:,} accounted records to history (batches of {batch_size:,})",
        "rows/s",
        target="≥ 0.50",
    )
    rss_big = Figure(f"backup peak memory, {args.rows:,} records (RSS growth)", "KiB")
    rss_small = Figure(f"backup peak memory, {small:,} records (RSS growth)", "KiB")
    traced: dict[int, list[float]] = {args.rows: [], small: []}

    for round_ in range(args.repeat):
        print(f"round {round_ + 1}/{args.repeat}", file=sys.stderr, flush=True)
        steps = ["app", "raw"] if round_ % 2 == 0 else ["raw", "app"]  # neither always goes first
        for step in steps:
            if step == "app":
                result = run_child(batch_size)
                assert result["moved"] == args.rows, result
                rate.app.append(args.rows / result["seconds"])
                rss_big.app.append(result["rss_growth_kib"])
                traced[args.rows].append(result["traced_peak_kib"])
            else:
                started = time.perf_counter()
                moved = execute(raw_move, [movable, today])
                seconds = time.perf_counter() - started
                assert moved == args.rows, moved
                rate.ceiling.append(args.rows / seconds)
            assert count("llmusage") == 0 and count("llmusage_history") == args.rows
            put_back()
        # The same backup over a tenth of the records: the others are pending, so they stay.
        execute(
            "UPDATE llmusage SET accounting_status = 'pending' WHERE id NOT IN "
            "(SELECT id FROM llmusage ORDER BY id LIMIT %s)",
            [small],
        )
        vacuum()
        result = run_child(batch_size)
        assert result["moved"] == small, result
        rss_small.app.append(result["rss_growth_kib"])
        traced[small].append(result["traced_peak_kib"])
        put_back()

    for figure, size in ((rss_big, args.rows), (rss_small, small)):
        figure.note = f"tracemalloc peak {max(traced[size]):,.0f} KiB"
    rate.note = "ceiling: one DELETE ... RETURNING → INSERT ... SELECT statement"
    print(markdown_table([rate, rss_big, rss_small]))


if __name__ == "__main__":
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    main()
