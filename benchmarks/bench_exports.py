"""The Parquet export: rows/s writing --rows usage records with `export_usage`, beside a raw COPY TO of the
same rows measured in the same run, and its peak memory at two sizes.

    python benchmarks/bench_exports.py --rows 1000000 [--repeat 3] [--batch-size 10000]

Data: llmusage holds --rows demo records (`load_demo_data`, spread over 30 days; demo records an earlier
benchmark of the same run loaded are reused). The export's period is the records' whole time range (a
month in production: the same read, one range of use_time over llmusage_all), all of them, every column.

Each round exports the period twice, alternating which goes first:
- llmlog: `export_usage(fmt="parquet")` in a subprocess (so its memory is its own): the server-side
  cursor, batches of --batch-size as row groups (zstd), the sums, the sha256 and the manifest;
- the ceiling: `COPY (SELECT <every column> FROM llmusage_all WHERE use_time in the range ORDER BY
  use_time, id) TO STDOUT` (text format) written to a file by psycopg in the same process: what
  PostgreSQL gives out at its fastest, with no types kept (money and times as text, no file format).
Peak memory is how far the subprocess's peak RSS rose above its RSS at the start of the export (the peak
reset first, so Django's start-up and pyarrow's first import of pandas, a dev dependency, do not hide
it), for the whole period and for a tenth of it: flat memory shows about the same at both sizes.
"""

import argparse
import json
import os
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.data import fill_usage, raw_connection  # noqa: E402
from benchmarks.processes import peak_rss, reset_peak_rss, run_json_child  # noqa: E402
from benchmarks.report import Figure, markdown_table  # noqa: E402
from benchmarks.startup import ROOT, rows_parser, setup_django  # noqa: E402


def child(start: str, end: str, out: str, batch_size: int) -> None:
    """Run one export in this process and print what it took as JSON."""
    setup_django(migrate=False)  # the parent has migrated
    from zoneinfo import ZoneInfo

    import pyarrow as pa
    from django.db import connection

    from llmlog.exports.period import ExportPeriod
    from llmlog.exports.records import export_usage

    period = ExportPeriod(
        label="bench",
        start=datetime.fromisoformat(start),
        end=datetime.fromisoformat(end),
        zone=ZoneInfo("UTC"),
    )
    connection.ensure_connection()
    # pyarrow's first conversion imports pandas when it is installed (a dev dependency here, not a
    # runtime one): done before the baseline, so the figure is the export's own memory.
    pa.array([0])
    baseline = reset_peak_rss()
    started = time.perf_counter()
    result = export_usage(period=period, fmt="parquet", out=out, batch_size=batch_size)
    seconds = time.perf_counter() - started
    print(
        json.dumps(
            {
                "rows": result.manifest["rows"],
                "seconds": seconds,
                "bytes": result.manifest["bytes"],
                "rss_growth_kib": peak_rss() - baseline,
            }
        )
    )


def run_child(start: datetime, end: datetime, out: Path, batch_size: int) -> dict:
    return run_json_child(
        [__file__, "--child", start.isoformat(), end.isoformat(), str(out), str(batch_size)], what="export"
    )


def copy_to(start: datetime, end: datetime, out: Path, columns: str) -> tuple[int, float, int]:
    """The raw ceiling: (rows, seconds, bytes) of COPY ... TO STDOUT of the same rows into a file."""
    sql = (
        f"COPY (SELECT {columns} FROM llmusage_all WHERE use_time >= %s AND use_time < %s "
        "ORDER BY use_time, id) TO STDOUT"
    )
    with raw_connection() as conn, conn.cursor() as cursor, out.open("wb") as file:
        started = time.perf_counter()
        with cursor.copy(sql, (start, end)) as copy:
            for block in copy:
                file.write(block)
        seconds = time.perf_counter() - started
        rows = cursor.rowcount
    return rows, seconds, out.stat().st_size


def main() -> None:
    parser = rows_parser(__doc__, rows_help="records in llmusage")
    parser.add_argument("--batch-size", type=int, default=None, help="default: the app's BATCH_SIZE")
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        start, end, out, batch_size = args.child
        child(start, end, out, int(batch_size))
        return
    if args.repeat < 3:
        parser.error("--repeat must be at least 3")

    setup_django()
    from django.db import connection

    from llmlog.exports.columns import export_columns
    from llmlog.exports.records import BATCH_SIZE
    from llmlog.models import UsageAll

    batch_size = args.batch_size or BATCH_SIZE
    print(f"preparing {args.rows:,} records...", file=sys.stderr, flush=True)
    fill_usage(rows=args.rows)
    with connection.cursor() as cursor:
        cursor.execute("SELECT min(use_time), max(use_time), count(*) FROM llmusage_all")
        first, last, total = cursor.fetchone()
    start, end = first, last + timedelta(microseconds=1)
    tenth_end = first + (end - first) / 10
    columns = ", ".join(connection.ops.quote_name(column.name) for column in export_columns(UsageAll))

    rate = Figure(f"Parquet export of {total:,} records (batches of {batch_size:,})", "rows/s")
    rss_all = Figure(f"Parquet export peak memory, {total:,} records (RSS growth)", "KiB")
    rss_tenth = Figure("Parquet export peak memory, a tenth of the range (RSS growth)", "KiB")
    sizes: dict[str, int] = {}
    with tempfile.TemporaryDirectory(dir=ROOT / "var") as folder:
        out, raw = Path(folder) / "usage.parquet", Path(folder) / "usage.copy"
        for round_ in range(args.repeat):
            print(f"round {round_ + 1}/{args.repeat}", file=sys.stderr, flush=True)
            for step in ["app", "raw"] if round_ % 2 == 0 else ["raw", "app"]:
                if step == "app":
                    result = run_child(start, end, out, batch_size)
                    assert result["rows"] == total, result
                    rate.app.append(total / result["seconds"])
                    rss_all.app.append(result["rss_growth_kib"])
                    sizes["parquet"], seconds = result["bytes"], result["seconds"]
                else:
                    rows, seconds, sizes["copy"] = copy_to(start, end, raw, columns)
                    assert rows == total, rows
                    rate.ceiling.append(total / seconds)
                print(f"  {step}: {total:,} rows in {seconds:.1f}s", file=sys.stderr, flush=True)
            rss_tenth.app.append(run_child(start, tenth_end, out, batch_size)["rss_growth_kib"])
    rate.note = (
        f"ceiling: COPY (SELECT ...) TO STDOUT into a file; Parquet {sizes['parquet'] / 2**20:,.0f} MiB, "
        f"COPY text {sizes['copy'] / 2**20:,.0f} MiB"
    )
    print(markdown_table([rate, rss_all, rss_tenth]))


if __name__ == "__main__":
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    main()
