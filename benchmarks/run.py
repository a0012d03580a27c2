"""`make bench`: run the benchmark scripts against PostgreSQL and write their report.

    python benchmarks/run.py --rows 1000000 [--only ingest,query | --all] [--output FILE]

Each benchmarks/bench_*.py prints a markdown table (figure, llmlog, raw-SQL ceiling, ratio); this
collects them with the date, the machine and the command that made them, into var/benchmarks.md
(BENCHMARKS.md is the curated record, each run read and explained there: a run never overwrites it).
By default the DEFAULT scripts run (over 16 minutes at a million rows); the others measure one issue
each (holds, limits, re-pricing, the adapters' CPU, ClickHouse) and run with --only or --all.
"""

import argparse
import os
import platform
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

from benchmarks.startup import DEFAULT_DATABASE_URL  # noqa: E402

# query, dialects and admin share one data set (half in history, rollups built); ingest and adapters
# then write on top of it (ingest tops llmusage up to --rows demo records); backup reuses those demo
# records (it deletes what ingest and adapters wrote, empties history) and load runs on the table
# backup leaves. Posting goes last: it empties llmusage and makes its own.
ORDER = ["query", "dialects", "admin", "ingest", "adapters", "backup", "load", "posting"]
# And issue 18's own: single records with and without group commit, beside one INSERT per commit.
DEFAULT = [*ORDER, "exports", "group_commit"]
# The posting figure is defined on 100,000 pending records (issue: "posting rate for 100,000").
MAX_ROWS = {"posting": 100_000}


def machine() -> str:
    meminfo = Path("/proc/meminfo").read_text().splitlines()
    mem_kib = next(int(line.split()[1]) for line in meminfo if line.startswith("MemTotal"))
    url = os.environ.get("BENCH_DATABASE_URL", DEFAULT_DATABASE_URL)
    try:
        import psycopg

        with psycopg.connect(url) as conn:
            pg = conn.execute("SHOW server_version").fetchone()[0]
    except Exception as exc:  # the report still says what went wrong
        pg = f"unknown ({exc})"
    cpu = platform.processor() or platform.machine()
    memory = f"{mem_kib / 1024 / 1024:.0f} GiB memory"
    return f"{os.cpu_count()} cores ({cpu}), {memory}, PostgreSQL {pg}, Python {platform.python_version()}"


def scripts(only: set[str] | None, *, every: bool = False) -> list[tuple[str, Path]]:
    """The scripts to run, in ORDER then by name: `only` if given, every one with `every`, else DEFAULT's."""
    found = {path.stem.removeprefix("bench_"): path for path in HERE.glob("bench_*.py")}
    if only and only - set(found):
        raise SystemExit(f"--only: no benchmark named {', '.join(sorted(only - set(found)))}")
    wanted = only or (set(found) if every else set(DEFAULT))
    names = [name for name in ORDER if name in found] + sorted(set(found) - set(ORDER))
    return [(name, found[name]) for name in names if name in wanted]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--only", default="", help="comma-separated names: bench_NAME.py")
    parser.add_argument("--all", action="store_true", help="every benchmark script, not only DEFAULT")
    parser.add_argument("--output", default=str(ROOT / "var" / "benchmarks.md"))
    args = parser.parse_args()
    only = {name.strip() for name in args.only.split(",") if name.strip()} or None

    command = " ".join(
        ["python benchmarks/run.py", f"--rows {args.rows}"]
        + ([f"--only {args.only}"] if only else [])
        + (["--all"] if args.all and not only else [])
    )
    sections = []
    for name, path in scripts(only, every=args.all):
        rows = min(args.rows, MAX_ROWS.get(name, args.rows))
        print(f"== {name}: {path.name} --rows {rows}", flush=True)
        started = time.monotonic()
        done = subprocess.run(
            [sys.executable, str(path), "--rows", str(rows)], cwd=ROOT, capture_output=True, text=True
        )
        elapsed = time.monotonic() - started
        sys.stdout.write(done.stdout)
        sys.stderr.write(done.stderr[-5000:])
        table = "\n".join(line for line in done.stdout.splitlines() if line.startswith("|"))
        if done.returncode != 0:
            table += (
                f"\n\n**{path.name} failed (exit {done.returncode}):**\n\n```\n{done.stderr[-2000:]}\n```"
            )
        sections.append(f"## {name}\n\n`benchmarks/{path.name} --rows {rows}`, {elapsed:.0f} s.\n\n{table}\n")

    report = "\n".join(
        [
            "# Benchmarks",
            "",
            f"Made {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {machine()}.",
            f"Command: `{command}` (`make bench`). Each figure: median of at least 3 runs (min–max),",
            "beside its raw-SQL ceiling measured in the same run; ratio = llmlog / ceiling",
            "(for times: how many times slower).",
            "",
            *sections,
        ]
    )
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(report)
    print(f"\nwrote {args.output}")


if __name__ == "__main__":
    main()
