"""Celery tasks: each takes ids or dates, calls one service, and owns its retry policy (STYLE.md)."""

import logging
import threading
import time
from collections import Counter
from datetime import date

from celery import shared_task

from core.tasks import retried_when_database_away
from llmlog import backup, posting, rollups, statements
from llmlog.clickhouse import mirror

logger = logging.getLogger(__name__)

# Ingest asks for a posting run at most once per this many seconds per process, and that run starts
# this many seconds later: every record is posted within a few seconds without one task per request.
POSTING_DEBOUNCE_SECONDS = 5.0


# The nightly move to history. `expires`: a run that could not start within 6 hours of its slot (workers
# down all night) is dropped rather than run into the day's ingest; the next night moves both days.
# `acks_late`: a worker lost mid-run leaves the message to be redelivered, and a rerun finishes the job
# (a redelivery that overlaps a live run is harmless too: the runs share the rows). A database that is
# briefly away is retried; anything else fails the run, recorded in JobRun for the admin.
@shared_task(
    acks_late=True,
    expires=6 * 3600,
    soft_time_limit=3 * 3600,
    time_limit=3 * 3600 + 600,
    **retried_when_database_away(60),
)
def backup_accounted_llmusage(before: str | None = None) -> dict:
    day = date.fromisoformat(before) if before else None
    return backup.backup_accounted_llmusage(before=day)


# The retention purge: short batches, harmless to rerun; nothing to do while retention is unset.
@shared_task(
    acks_late=True,
    expires=6 * 3600,
    soft_time_limit=3600,
    time_limit=3600 + 300,
    **retried_when_database_away(60),
)
def purge_history(before: str | None = None) -> dict:
    day = date.fromisoformat(before) if before else None
    return backup.purge_history(before=day)


# The ClickHouse mirror (CLICKHOUSE_URL): history moved since the last sync, and the hourly rollups' days
# that changed. A failure (ClickHouse away) is left to the next run 5 minutes later, which catches up: no
# retry; `expires` drops a backlog.
@shared_task(acks_late=True, expires=4 * 60, soft_time_limit=30 * 60, time_limit=30 * 60 + 60)
def clickhouse_sync() -> dict:
    return mirror.clickhouse_sync_quietly()


# Hourly rollups for stats: builds each hour once it has settled, and rebuilds hours that late records
# landed in. Every run rebuilds from the rows, so a rerun or a redelivery is harmless (`acks_late`); a
# run that waited past the next one's slot is dropped (`expires`): the next run does its work too.
@shared_task(
    acks_late=True,
    expires=4 * 60,
    soft_time_limit=30 * 60,
    time_limit=30 * 60 + 60,
    **retried_when_database_away(30),
)
def build_usage_rollups() -> dict:
    return rollups.build_usage_rollups()


# Posting to the ledger: every minute from beat, and a few seconds after ingest commits new records
# (`only_if_pending`: those runs do nothing, not even a JobRun, when another run got there first).
# Runs stop taking batches after 50 s so they fit the minute; several at once share the work (SKIP
# LOCKED). `acks_late`: a lost worker's run is redelivered, and its uncommitted batch is still pending.
@shared_task(
    acks_late=True,
    soft_time_limit=110,
    time_limit=120,
    **retried_when_database_away(5),
)
def account_pending_usage(only_if_pending: bool = False) -> dict:
    if only_if_pending and not posting.pending_usage_exists():
        return {"claimed": 0}
    return posting.account_pending_usage(max_seconds=50)


# Failed postings whose backoff has passed (2^attempts minutes, at most 6 h), every 15 minutes. A rerun
# is harmless: an accounted record is never posted twice, and the runs share failures (SKIP LOCKED).
@shared_task(
    acks_late=True,
    soft_time_limit=600,
    time_limit=660,
    **retried_when_database_away(30),
)
def retry_failed_accounting() -> dict:
    return posting.retry_failed_accounting(max_seconds=540).counts


# Monthly statements: hourly on the 1st and 2nd (beat), each customer account's last ended month in its
# own zone is closed (and any month a missed run left open). A closed month again is a no-op, so a rerun
# or a redelivery is harmless (`acks_late`); a run that waited past the next slot is dropped (`expires`).
@shared_task(
    acks_late=True,
    expires=50 * 60,
    soft_time_limit=45 * 60,
    time_limit=50 * 60,
    **retried_when_database_away(60),
)
def close_ended_periods() -> dict:
    results = statements.close_ended_periods()
    return dict(Counter(result.outcome.value for result in results))


_last_request = float("-inf")
_request_lock = threading.Lock()


def request_posting_soon() -> None:
    """Ask a worker to post new records in a few seconds. Called on commit of every ingest, so it is
    debounced: at most one task per POSTING_DEBOUNCE_SECONDS per process. The every-minute schedule
    catches anything this misses (a broker that is down never fails an ingest)."""
    global _last_request
    now = time.monotonic()
    with _request_lock:
        if now - _last_request < POSTING_DEBOUNCE_SECONDS:
            return
        _last_request = now
    try:
        # ignore_result: nobody waits for this one's result, and asking for it makes the Redis result
        # backend subscribe to it first, which with Redis down retried 20 times a second apart inside
        # the ingest request (a 19 s answer, tests/test_faults.py).
        account_pending_usage.apply_async(
            kwargs={"only_if_pending": True},
            countdown=POSTING_DEBOUNCE_SECONDS,
            expires=60,
            ignore_result=True,
        )
    except Exception:
        logger.warning("could not enqueue account_pending_usage after ingest", exc_info=True)
