"""Retention: deleting the usage records an operator no longer keeps (new-api's DELETE /api/log/).

Only records that owe nothing more are deleted: accounted (posted to the ledger) and skipped. Pending
and failed records still have money to post and are never deleted here.

Budgets are not refunded (accounting.budgets): what was consumed stays consumed, as with the nightly
history purge. A `total` budget is a key's quota, and forgetting old rows must not hand the quota back;
a day/week/month counter keeps what its period spent. Only an operator's delete of a record not yet
accounted (llmlog.edits) takes its amount out.
"""

from datetime import datetime

from django.db import connection, transaction

from llmlog.clickhouse.mirror import clickhouse_delete_begin, clickhouse_delete_end
from llmlog.clickhouse.schema import micros
from llmlog.models import AccountingStatus, LLMUsage, LLMUsageHistory
from llmlog.rollups import floor_hour, usage_rollups_mark_stale, usage_rollups_refresh_hours

DELETABLE = (AccountingStatus.ACCOUNTED, AccountingStatus.SKIPPED)
# Records deleted per transaction: each batch commits in well under a second, so row locks stay
# brief and ingest and the nightly move never wait long behind a big DELETE.
DELETE_BATCH_SIZE = 5_000


def usage_delete_before(*, before: datetime, org: str = "", batch_size: int = DELETE_BATCH_SIZE) -> int:
    """Delete the accounted and skipped records of `org` ("" = every org) that started before `before`,
    from `llmusage` and `llmusage_history`, `batch_size` per transaction. Returns how many.

    Each batch re-checks the status it deletes, and on PostgreSQL skips rows another transaction holds
    (the posting worker, the nightly move), so the purge never waits on them; a row it skipped is left
    for the next purge. The hours it emptied are marked stale with each batch and rebuilt at the end.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    deleted = 0
    hours: set[datetime] = set()
    clickhouse_mark = clickhouse_delete_begin()  # ClickHouse unread until it has deleted them too
    for model in (LLMUsage, LLMUsageHistory):
        while True:
            with transaction.atomic():
                batch = model.objects.filter(use_time__lt=before, accounting_status__in=DELETABLE)
                if org:
                    batch = batch.filter(userorgid=org)
                if connection.vendor == "postgresql":
                    batch = batch.select_for_update(skip_locked=True)
                found = dict(batch.values_list("id", "use_time")[:batch_size])
                if found:
                    count, _ = model.objects.filter(id__in=found, accounting_status__in=DELETABLE).delete()
                    deleted += count
                    emptied = {floor_hour(use_time) for use_time in found.values()}
                    # Marked with the delete, rebuilt once at the end: stats read rows meanwhile.
                    usage_rollups_mark_stale(hours=emptied)
                    hours |= emptied
            if len(found) < batch_size:
                break
    usage_rollups_refresh_hours(hours=hours)
    where = "use_time < %(before)s AND accounting_status IN %(statuses)s" + (
        " AND userorgid = %(org)s" if org else ""
    )
    params = {"before": micros(before), "statuses": tuple(str(status) for status in DELETABLE), "org": org}
    clickhouse_delete_end(mark=clickhouse_mark, where=where, params=params)
    return deleted
