"""Posting rate: pending usage into the ledger with one worker, beside the bulk ingest rate.

    BENCH_DATABASE_URL=postgres://postgres@127.0.0.1:5432/llmlog_bench .venv/bin/python \
        benchmarks/bench_posting.py --rows 100000

Each repetition starts from empty tables and
1. ingests `--rows` records with `llmlog.ingest.usage_ingest`, 1000-record bodies (the gateway's bulk
   path; the records carry amount and cost, as gateways that price their calls send them);
2. posts them all with `llmlog.posting.account_pending_usage` (one worker, the default batch size);
3. puts them back to pending with an empty ledger and posts them with the raw-SQL ceiling: one
   statement that marks every record accounted and writes its transaction and lines, and one UPDATE of
   the balances (no batches, no locks beyond the statement's, no per-record checks or failures).

Target (issue 4): posting at least half the bulk ingest rate, so the ledger is never the bottleneck.
"""

import argparse
import contextlib
import json
import statistics
import sys
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.report import Figure, markdown_table, timed  # noqa: E402
from benchmarks.startup import setup_django  # noqa: E402

ORGS = [f"org-{i:02d}" for i in range(20)]
OWNERS = ["openai", "anthropic", "google", "deepseek", "alibaba"]
MODELS = ["gpt-4o", "claude-sonnet-4", "gemini-2.5-pro", "deepseek-chat", "qwen-max"]
BODY_SIZE = 1000

CEILING_SQL = """
WITH claimed AS (
    UPDATE llmusage SET accounting_status = 'accounted', accounted_at = now()
    WHERE accounting_status = 'pending'
    RETURNING id, transno, userorgid, ownerid, amount, cost, currency
), txn AS (
    INSERT INTO accounting_ledger_transaction
        (id, kind, usage_id, reference, currency, amount, memo, created_by, created_at)
    SELECT gen_random_uuid(), 'usage', id, transno, currency, amount, '', '', now() FROM claimed
    RETURNING id, usage_id
)
INSERT INTO accounting_ledger_line (transaction_id, account_id, amount)
SELECT txn.id, account.id, line.amount
FROM txn
JOIN claimed ON claimed.id = txn.usage_id
CROSS JOIN LATERAL (VALUES
    (claimed.userorgid, 'customer', -claimed.amount),
    (claimed.ownerid, 'owner', claimed.cost),
    ('', 'platform', claimed.amount - claimed.cost)
) AS line (org, kind, amount)
JOIN accounting_account AS account
    ON account.kind = line.kind AND account.currency = claimed.currency
    AND (line.kind = 'platform' OR account.org = line.org)
WHERE line.amount <> 0
"""
CEILING_BALANCES_SQL = """
UPDATE accounting_account SET balance = balance + sums.total
FROM (SELECT account_id, sum(amount) AS total FROM accounting_ledger_line GROUP BY account_id) AS sums
WHERE accounting_account.id = sums.account_id
"""
# With the re-pricing items, which point at ledger transactions: TRUNCATE refuses to empty a table
# another references unless that one goes too (the benchmark's database has no re-pricing to keep).
LEDGER_TABLES = (
    "accounting_ledger_line, accounting_ledger_transaction, llmusage_accounting_failed, "
    "accounting_repricing_item"
)


def make_bodies(rows: int) -> list[bytes]:
    """JSON bodies of 1000 records each, as a gateway sends them: priced, varied orgs and models."""
    start = datetime(2026, 11, 20, tzinfo=UTC)
    records = []
    for i in range(rows):
        model = i % len(MODELS)
        input_tokens = 200 + (i * 37) % 4000
        output_tokens = 50 + (i * 53) % 1500
        amount = (input_tokens * 2.5 + output_tokens * 10) / 1_000_000
        records.append(
            {
                "transno": f"bench-post-{i:09d}",
                "use_time": (start + timedelta(milliseconds=i * 40)).isoformat(),
                "userid": f"user-{i % 500:03d}",
                "userorgid": ORGS[i % len(ORGS)],
                "model_name": MODELS[model],
                "llmid": MODELS[model],
                "ownerid": OWNERS[model],
                "input_tokens": input_tokens,
                "output_tokens": output_tokens,
                "amount": f"{amount:.5f}",
                "cost": f"{amount * 0.8:.5f}",
            }
        )
    return [json.dumps(records[i : i + BODY_SIZE]).encode() for i in range(0, rows, BODY_SIZE)]


def ensure_accounts() -> None:
    from accounting.accounts import AccountExists, account_create
    from accounting.models import Account

    wanted = (
        [(org, "customer") for org in ORGS] + [(org, "owner") for org in OWNERS] + [("platform", "platform")]
    )
    for org, kind in wanted:
        with contextlib.suppress(AccountExists):
            account_create(org=org, kind=kind)
    # A credit line no benchmark run reaches, also on accounts an earlier run (or the demo data) made:
    # every record posts.
    Account.objects.update(credit_limit=Decimal(10**9), status=Account.Status.ACTIVE)


# Emptied tables are not ANALYZEd: statistics that say "empty" make PostgreSQL plan the foreign-key
# checks of the ledger lines as sequential scans, which no long-lived ledger sees. llmusage is analyzed
# once it is full, as autovacuum would have done on a real system.
def reset_all() -> None:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(f"TRUNCATE llmusage, {LEDGER_TABLES}")
        cursor.execute("UPDATE accounting_account SET balance = 0")


def reset_to_pending() -> None:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(f"TRUNCATE {LEDGER_TABLES}")
        cursor.execute("UPDATE accounting_account SET balance = 0")
        cursor.execute("UPDATE llmusage SET accounting_status = 'pending', accounted_at = NULL")
    vacuum("llmusage")


def vacuum(*tables: str) -> None:
    from django.db import connection

    with connection.cursor() as cursor:
        for table in tables:
            cursor.execute(f"VACUUM ANALYZE {table}")


def ingest(bodies: list[bytes]) -> None:
    from llmlog.ingest.service import usage_ingest

    for body in bodies:
        result = usage_ingest(body=body)
        assert result.count("created") == len(result.items), "ingest did not create every record"


def post(rows: int) -> None:
    from llmlog.posting import account_pending_usage

    counts = account_pending_usage()
    assert counts["accounted"] == rows, counts


def post_ceiling(rows: int) -> None:
    from django.db import connection, transaction

    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(CEILING_SQL)
        cursor.execute(CEILING_BALANCES_SQL)
        cursor.execute("SELECT count(*) FROM accounting_ledger_transaction")
        assert cursor.fetchone()[0] == rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    if args.repeat < 3:
        parser.error("--repeat must be at least 3")

    setup_django()
    import llmlog.ingest.service

    # Ingest asks a worker to post soon after each commit (debounced); no worker runs here, and the
    # benchmark posts itself, so the request goes nowhere.
    llmlog.ingest.service.request_posting_soon = lambda: None

    ensure_accounts()
    bodies = make_bodies(args.rows)
    ingest_figure = Figure("bulk ingest (`usage_ingest`, 1000-record bodies)", "rows/s", note="reference")
    posting_figure = Figure(
        "posting (`account_pending_usage`, 1 worker)", "rows/s", target="≥ 0.5 × bulk ingest"
    )
    for repetition in range(args.repeat):
        reset_all()
        ingest_figure.app.append(args.rows / timed(lambda: ingest(bodies)))
        vacuum("llmusage")
        posting_figure.app.append(args.rows / timed(lambda: post(args.rows)))
        reset_to_pending()
        posting_figure.ceiling.append(args.rows / timed(lambda: post_ceiling(args.rows)))
        rates = (ingest_figure.app[-1], posting_figure.app[-1], posting_figure.ceiling[-1])
        print(
            f"run {repetition + 1}: ingest, posting, ceiling: " + ", ".join(f"{r:,.0f}/s" for r in rates),
            file=sys.stderr,
        )
    share = statistics.median(posting_figure.app) / statistics.median(ingest_figure.app)
    posting_figure.note = f"posting / ingest = {share:.2f} ({'met' if share >= 0.5 else 'NOT met'})"
    reset_all()
    print(f"\n### Posting, {args.rows:,} records\n")
    print(markdown_table([ingest_figure, posting_figure]))


if __name__ == "__main__":
    main()
