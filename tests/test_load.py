"""The load test, short form: 50 concurrent clients on loopback against gunicorn for 15 seconds, mixed
ingest (single records and batches) and reads, with org keys. Nothing acknowledged may be lost (count
and sum of amount checked in the database after), no request may fail, and p99 latency is reported.

The full form, with its figures in the benchmark report, is benchmarks/bench_load.py (same `run_load`).
LLMLOG_LOAD_SECONDS sets the length here.
"""

import os
from decimal import Decimal

import pytest

from benchmarks.bench_load import run_load
from llmlog.keys import api_key_create
from llmlog.models import UsageAll
from tests.servers import gunicorn_server

SECONDS = float(os.environ.get("LLMLOG_LOAD_SECONDS", "15"))
CLIENTS = 50


@pytest.mark.django_db(transaction=True)
def test_fifty_clients_of_mixed_ingest_and_reads_lose_nothing_and_fail_nothing(tmp_path):
    orgs = [f"load-org-{i}" for i in range(10)]
    keys = {org: api_key_create(userorgid=org, scopes=["ingest", "read"])[1] for org in orgs}
    # The records state their money: the platform gateway's key writes them, the org keys read.
    gateway_key = api_key_create(userorgid="", role="admin", scopes=["ingest"])[1]

    with gunicorn_server(tmp_path) as port:
        result = run_load(port=port, keys=keys, seconds=SECONDS, clients=CLIENTS, ingest_key=gateway_key)

    stored = UsageAll.objects.filter(transno__startswith=f"load-{result.tag}-")
    # Added up here, each stored amount exactly (SQLite's SUM of a decimal column is a float sum).
    stored_amount = sum(stored.values_list("amount", flat=True), Decimal(0))
    print(
        f"\n{result.requests} requests in {result.seconds:.1f}s ({result.requests_per_second:.0f}/s), "
        f"p50 {result.percentile(50):.1f} ms, p99 {result.percentile(99):.1f} ms "
        f"(ingest p99 {result.percentile(99, 'single'):.1f} ms, "
        f"reads p99 {result.percentile(99, 'read'):.1f} ms), "
        f"{len(result.acknowledged)} records acknowledged"
    )
    assert result.errors == [], result.errors[:5]
    assert result.requests > CLIENTS  # every client got through more than one request
    assert len(result.acknowledged) > 0 and set(result.by_kind) == {"single", "bulk", "read"}
    assert stored.count() == len(result.acknowledged)  # lost: 0, and nothing unacknowledged either
    assert set(stored.values_list("transno", flat=True)) == set(result.acknowledged)
    assert stored_amount == sum(result.acknowledged.values(), Decimal(0))
    # A hang guard, not a latency bound (the figures are benchmarks/bench_load.py's): a request slower
    # than the clients' 60 s timeout is an error above, so only a client stuck past it ends the run late.
    assert result.seconds < SECONDS + 60, f"the run took {result.seconds:.0f}s: a client hung"
