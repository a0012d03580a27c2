"""Re-pricing: rows/s re-pricing --rows accounted usage records (a dry run, and a re-pricing applied at
once), beside raw COPY of the same rows measured in the same run.

    python benchmarks/bench_repricing.py --rows 1000000 [--repeat 3]

Data: llmusage holds --rows demo records (`load_demo_data`, spread over 30 days, with the demo prices
and accounts); those with a charge are marked accounted (the re-pricing reads records, not their usage
postings, so they are not posted: 1M postings would only slow the set-up). Then every sale and cost
price of the demo book rises by 10%, so every priced record in scope changes.

Each round, over the records' whole use_date range (every record in scope):
- dry run: `repricing_create` — read the records in batches over llmusage_all (keyset on id), their
  earlier adjustments, price each with `apply_prices`, write a RepricingItem per changed record and the
  report;
- apply at once: `repricing_create(apply=True)` — the same plus the adjustment transactions (one per
  customer, owner and currency) and the items' link to them;
- the ceiling: `COPY (SELECT <the columns re-pricing reads> FROM llmusage_all WHERE use_date in the
  range) TO STDOUT` read by psycopg, then `COPY ... FROM STDIN` of as many item-shaped rows into a
  temporary table: a raw read and write of the same volume, without pricing or checks.
Between rounds the re-pricings, their items and adjustments are deleted, so each round starts alike.
"""

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.data import fill_usage, raw_connection  # noqa: E402
from benchmarks.report import Figure, markdown_table  # noqa: E402
from benchmarks.startup import setup_django  # noqa: E402

RAISE = "1.1"  # every demo price rises by 10%


def prepare(rows: int) -> tuple:
    """The demo records, accounted, the demo accounts, the prices raised; (first day, last day, records)."""
    from django.db import connection

    from llmlog.demo import ensure_demo_accounts

    fill_usage(rows=rows)
    ensure_demo_accounts()
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE llmusage SET accounting_status = 'accounted', accounted_at = now() "
            "WHERE accounting_status = 'pending' AND amount IS NOT NULL"
        )
        cursor.execute(
            "UPDATE llmlog_model_price SET input_price = input_price * %s, output_price = output_price * %s",
            [RAISE, RAISE],
        )
        cursor.execute("VACUUM ANALYZE llmusage")
        cursor.execute(
            "SELECT min(use_date), max(use_date), count(*) FROM llmusage_all "
            "WHERE status = 'success' AND accounting_status IN ('accounted', 'pending', 'failed') "
            "AND amount IS NOT NULL AND cost IS NOT NULL"
        )
        return cursor.fetchone()


def clear() -> None:
    """Forget the previous round: its re-pricings, items and adjustments (balances are left moved)."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM accounting_repricing_item")
        cursor.execute(
            "DELETE FROM accounting_ledger_line WHERE transaction_id IN "
            "(SELECT id FROM accounting_ledger_transaction WHERE kind = 'adjustment')"
        )
        cursor.execute("DELETE FROM accounting_ledger_transaction WHERE kind = 'adjustment'")
        cursor.execute("DELETE FROM accounting_repricing")


def ceiling(first, last, expected: int) -> float:
    """Seconds of the raw read (COPY TO) and write (COPY FROM, into a temporary table) of the volume."""
    from llmlog.repricing import RECORD_FIELDS

    columns = ", ".join(f'"{name}"' for name in RECORD_FIELDS)
    read = (
        f"COPY (SELECT {columns} FROM llmusage_all WHERE use_date BETWEEN %s AND %s AND status = 'success' "
        "AND accounting_status IN ('accounted', 'pending', 'failed') AND amount IS NOT NULL "
        "AND cost IS NOT NULL) TO STDOUT"
    )
    with raw_connection() as conn, conn.cursor() as cursor:
        cursor.execute(
            "CREATE TEMPORARY TABLE bench_items (LIKE accounting_repricing_item INCLUDING ALL) ON COMMIT DROP"
        )
        started = time.perf_counter()
        blocks = []
        with cursor.copy(read, (first, last)) as copy:
            for block in copy:
                blocks.append(block)
        rows = cursor.rowcount
        line = "1\t{}\tt-1\torg-01\towner\tgpt\t2026-11-20\tUSD\tadjustment\t0.1\t0.2\t0.05\t0.06\t\\N\n"
        with cursor.copy(
            "COPY bench_items (repricing_id, usage_id, transno, userorgid, ownerid, model_name, use_date, "
            "currency, treatment, old_amount, new_amount, old_cost, new_cost, adjustment_id) FROM STDIN"
        ) as copy:
            for n in range(0, rows, 10_000):
                copy.write(
                    "".join(
                        line.format(f"00000000-0000-7000-8000-{i:012d}")
                        for i in range(n, min(rows, n + 10_000))
                    )
                )
        seconds = time.perf_counter() - started
    assert rows == expected, (rows, expected)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_000_000, help="records in llmusage")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    if args.repeat < 3:
        parser.error("--repeat must be at least 3")

    setup_django()
    from llmlog.repricing import repricing_create

    print(f"preparing {args.rows:,} records...", file=sys.stderr, flush=True)
    first, last, total = prepare(args.rows)
    dry = Figure(
        f"re-pricing dry run, {total:,} records in scope", "rows/s", note="ceiling: COPY TO + COPY FROM"
    )
    applied = Figure(
        f"re-pricing applied at once, {total:,} records", "rows/s", note="ceiling: COPY TO + COPY FROM"
    )
    changed = 0
    for round_ in range(args.repeat):
        print(f"round {round_ + 1}/{args.repeat}", file=sys.stderr, flush=True)
        for step in ("dry", "apply", "raw") if round_ % 2 == 0 else ("raw", "apply", "dry"):
            clear()
            started = time.perf_counter()
            if step == "raw":
                seconds = ceiling(first, last, total)
                dry.ceiling.append(total / seconds)
                applied.ceiling.append(total / seconds)
            else:
                repricing = repricing_create(start=first, end=last, apply=step == "apply", created_by="bench")
                seconds = time.perf_counter() - started
                assert repricing.records == total, (repricing.records, total)
                changed = repricing.changed
                (dry if step == "dry" else applied).app.append(total / seconds)
            print(f"  {step}: {total:,} rows in {seconds:.1f}s", file=sys.stderr, flush=True)
    clear()
    print(f"{total:,} records in scope, {changed:,} changed", file=sys.stderr)
    print(markdown_table([dry, applied]))


if __name__ == "__main__":
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    main()
