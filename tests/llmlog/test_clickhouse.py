"""ClickHouse as the analytics store, against a real server (tests/clickhouse_server.py): every stats,
count, total and page answer with ClickHouse equals PostgreSQL's alone, to the last decimal, across the
nightly move, an operator's edits, the purges and ClickHouse being away; a rerun never doubles a record.
The mirrored hourly rollups equal PostgreSQL's bucket for bucket after each sync, as hours are rebuilt
and emptied, and after ClickHouse missed a sync.

PostgreSQL only (the move, the purges and the partitions are PostgreSQL's); the statements themselves run
in both passes and on today's engine too (test_clickhouse_sql.py)."""

import os
import re
import subprocess
import sys
from dataclasses import replace
from datetime import datetime, timedelta
from decimal import Decimal
from io import StringIO
from typing import Any

import pytest
from django.core.management import call_command
from django.utils import timezone

from llmlog import tasks
from llmlog.backup import backup_accounted_llmusage, purge_history
from llmlog.clickhouse import mirror
from llmlog.clickhouse.client import clickhouse_execute
from llmlog.clickhouse.mirror import clickhouse_backfill, clickhouse_sync, synced_through
from llmlog.clickhouse.reads import clickhouse_split
from llmlog.clickhouse.schema import ROLLUP_TABLE, column_list, insert_records, rollup_columns
from llmlog.edits import UsageImmutable, usage_delete, usage_update
from llmlog.models import LLMUsage, LLMUsageHistory, UsageRollup, UsageRollupState
from llmlog.queries import EVERY_RECORD, HISTORY, Ordering, UsageQuery
from llmlog.repricing import repricing_create
from llmlog.retention import usage_delete_before
from llmlog.rollups import HOUR, build_usage_rollups, floor_hour
from llmlog.selectors.records import usage_matching, usage_page
from llmlog.selectors.stats import usage_stats, usage_sums_by_org
from llmlog.selectors.totals import usage_count, usage_total
from tests.factories import make_accounts, make_usage
from tests.llmlog.test_repricing import set_prices

pytestmark = [pytest.mark.postgres, pytest.mark.clickhouse, pytest.mark.django_db]

PAGE_COLUMNS = ("id", "use_time", "use_date", "userorgid", "model_name", "amount", "cost", "total_tokens")
PAGE_COLUMNS += ("metadata", "usages", "request_ip", "is_stream", "accounted_at")
BY_COST = Ordering(field="cost", descending=True)  # pages by use_time are PostgreSQL's; these ClickHouse's


@pytest.fixture
def clickhouse(settings, clickhouse_server_url):
    """CLICKHOUSE_URL set to the session's server, its tables dropped: each test starts empty."""
    settings.CLICKHOUSE_URL = clickhouse_server_url
    for table in ("llmusage_history", ROLLUP_TABLE, f"{ROLLUP_TABLE}_load"):
        clickhouse_execute(f"DROP TABLE IF EXISTS {table}")
    mirror._tables_made.clear()
    yield clickhouse_server_url
    mirror._tables_made.clear()


def _queries(now) -> list[UsageQuery]:
    return [
        EVERY_RECORD,
        UsageQuery(org="acme"),
        UsageQuery(start=now - timedelta(days=45), end=now),
        UsageQuery(org="globex", start=now - timedelta(days=12, hours=5), end=now - timedelta(days=1)),
        UsageQuery(model_name="claude-3"),
        UsageQuery(day=timezone.localdate(now - timedelta(days=10))),
        UsageQuery(userid="u-2", status="failed"),
        UsageQuery(min_amount=Decimal("0.00500"), max_amount=Decimal("0.02"), token_name="ci"),
        UsageQuery(source=HISTORY),
        UsageQuery(token_key_hashes=("hash-1",)),
        UsageQuery(ordering=Ordering(field="amount", descending=True)),
        UsageQuery(org="acme", ordering=Ordering(field="total_tokens", descending=False)),
    ]


def _answers(queries: list[UsageQuery], now) -> list[Any]:
    answers = []
    for query in queries:
        total = usage_total(query=query, now=now)
        stats = usage_stats(query=query, now=now)
        total.pop("rollup_hours")
        stats.pop("rollup_hours")
        answers.append(
            {
                "total": total,
                "count": usage_count(query=query, now=now),
                "stats": stats,
                "by_org": usage_sums_by_org(query=query, now=now),
                "page": usage_page(query=query, offset=0, limit=40, columns=PAGE_COLUMNS),
                "deep": usage_page(query=query, offset=7, limit=5, columns=PAGE_COLUMNS),
                "by_cost": usage_page(
                    query=replace(query, ordering=BY_COST), offset=3, limit=9, columns=PAGE_COLUMNS
                ),
            }
        )
    return answers


def assert_same_as_postgresql_alone(settings, now, zones: tuple[str, ...] = ("UTC",)) -> None:
    """Every answer with ClickHouse equals PostgreSQL's alone (in each of `zones`: the stats' days are
    its days); and ClickHouse answered the queries it can."""
    for zone in zones:
        with timezone.override(zone):
            queries = _queries(now)
            with_clickhouse = _answers(queries, now)
            url, settings.CLICKHOUSE_URL = settings.CLICKHOUSE_URL, None
            alone = _answers(queries, now)
            settings.CLICKHOUSE_URL = url
            for query, mine, theirs in zip(queries, with_clickhouse, alone, strict=True):
                assert mine == theirs, query
    assert synced_through() is not None
    # ClickHouse answered every query, but those PostgreSQL's rollups answer once they are built.
    rollups = UsageRollupState.objects.filter(name="usage", built_through__isnull=False).exists()
    for query in _queries(now):
        expected = not (rollups and query.rollups_can_answer)
        assert (clickhouse_split(query, usage_matching(query=query)) is not None) == expected, query


def _clickhouse_rows() -> int:
    return clickhouse_execute("SELECT count() FROM llmusage_history FINAL")[0][0]


def _records(now) -> None:
    """Accounted records of past days (two months back to yesterday, two orgs, odd amounts, unpriced
    and failed ones), a pending one of last week and today's, all hot until the move."""
    for days, org, model, amount, extra in [
        (40, "acme", "gpt-4o", Decimal("0.01234"), {}),
        (38, "globex", "claude-3", Decimal("1.00001"), {"token_key_hash": "hash-1"}),
        (33, "acme", "claude-3", None, {"accounting_status": "skipped", "cost": None}),
        (20, "acme", "gpt-4o", Decimal("0.00501"), {"token_name": "ci", "metadata": {"k": [1, "é"]}}),
        (12, "globex", "gpt-4o", Decimal("0.00999"), {"userid": "u-2", "status": "failed"}),
        (
            10,
            "acme",
            "gpt-4o",
            Decimal("0.02000"),
            {"usages": {"prompt_tokens": 7}, "request_ip": "10.0.0.1"},
        ),
        (10, "globex", "claude-3", Decimal("0.00007"), {"is_stream": True, "token_key_hash": "hash-1"}),
        (2, "acme", "claude-3", Decimal("3.14159"), {"token_name": "ci"}),
        (1, "globex", "gpt-4o", Decimal("0.00001"), {"userid": "u-2", "status": "failed"}),
        (1, "acme", "gpt-4o", Decimal("0.00600"), {}),
    ]:
        for hour in (1, 13):
            fields = {"accounting_status": "accounted", "accounted_at": now - timedelta(days=days - 1)}
            fields.update(extra)
            make_usage(
                use_time=now - timedelta(days=days, hours=hour, microseconds=17 * hour),
                userorgid=org,
                model_name=model,
                amount=amount,
                input_tokens=100 * days + hour,
                **fields,
            )
    make_usage(use_time=now - timedelta(days=6), amount=Decimal("0.5"))  # pending: stays hot
    make_usage(use_time=now - timedelta(minutes=3), accounting_status="skipped")  # today's


def test_every_answer_equals_postgresql_alone_across_move_edits_and_purges(clickhouse, settings):
    now = timezone.now()
    _records(now)
    counts = backup_accounted_llmusage()
    assert counts["moved"] == 20 and counts["clickhouse"]["loaded"] == 20
    assert _clickhouse_rows() == LLMUsageHistory.objects.count() == 20
    assert_same_as_postgresql_alone(settings, now, zones=("UTC", "Asia/Kolkata"))  # days of +5:30 too

    # An operator's edit and delete reach hot records only (history is read-only, refused): ClickHouse,
    # which holds history, has nothing to follow, and the answers stay equal.
    pending = LLMUsage.objects.get(accounting_status="pending")
    usage_update(id=pending.pk, changes={"amount": Decimal("0.77777")}, actor="ops")
    usage_delete(id=LLMUsage.objects.get(use_time__gt=now - timedelta(hours=1)).pk, actor="ops")
    with pytest.raises(UsageImmutable):
        usage_update(id=LLMUsageHistory.objects.first().pk, changes={"amount": Decimal(1)}, actor="ops")
    assert_same_as_postgresql_alone(settings, now)

    # A re-pricing: accounted records (history) keep their figures, the ledger takes the adjustments;
    # the pending record is re-priced in place, on PostgreSQL.
    make_accounts(customers=("acme", "globex"), funds=Decimal(100))
    set_prices()
    repricing = repricing_create(
        start=timezone.localdate(now - timedelta(days=12)), end=timezone.localdate(now), apply=True
    )
    assert repricing.status == "applied" and repricing.changed >= 2
    assert LLMUsage.objects.get(accounting_status="pending").amount != Decimal("0.77777")
    assert_same_as_postgresql_alone(settings, now)

    # The retention purge: whole months dropped, the rest of the days deleted, in ClickHouse too.
    purged = purge_history(before=timezone.localdate(now - timedelta(days=19)))
    assert purged["purged"] == 8
    assert purged["clickhouse"]["partitions_dropped"] >= 1
    assert _clickhouse_rows() == LLMUsageHistory.objects.count() == 12
    build_usage_rollups()  # PostgreSQL alone now answers closed hours from its rollups
    assert_same_as_postgresql_alone(settings, now)

    # new-api's delete of an org's old records, hot and history.
    assert usage_delete_before(before=now - timedelta(days=5), org="acme") == 2
    assert _clickhouse_rows() == LLMUsageHistory.objects.count() == 10
    assert_same_as_postgresql_alone(settings, now)


def test_clickhouse_away_during_the_move_then_behind_then_caught_up(clickhouse, settings):
    now = timezone.now()
    _records(now)
    backup_accounted_llmusage(before=timezone.localdate(now - timedelta(days=15)))
    mark = synced_through()
    assert _clickhouse_rows() == 8

    url, settings.CLICKHOUSE_URL = settings.CLICKHOUSE_URL, "clickhouse://default@127.0.0.1:1/default"
    counts = backup_accounted_llmusage()  # the move succeeds; the mirror reports it is behind
    assert counts["moved"] == 12 and "error" in counts["clickhouse"]
    assert synced_through() == mark
    assert_same_as_postgresql_alone(settings, now)  # reads fall back to PostgreSQL

    settings.CLICKHOUSE_URL = url  # back, but behind: history since the mark is PostgreSQL's
    assert _clickhouse_rows() == 8
    assert_same_as_postgresql_alone(settings, now)

    assert tasks.clickhouse_sync.apply().get()["loaded"] == 12  # the 5-minute beat task catches up
    assert _clickhouse_rows() == 20
    assert_same_as_postgresql_alone(settings, now)


def test_a_rerun_or_a_crash_never_doubles_a_record(clickhouse, settings):
    now = timezone.now()
    _records(now)
    backup_accounted_llmusage()
    # A sync that died after writing and before moving its mark writes the same records again.
    assert mirror._load(LLMUsageHistory.objects.all()) == 20
    assert _clickhouse_rows() == 20
    assert_same_as_postgresql_alone(settings, now)
    assert clickhouse_backfill()["days_reloaded"] == 0


def test_a_purge_clickhouse_misses_is_reconciled_by_the_next_sync(clickhouse, settings):
    now = timezone.now()
    _records(now)
    backup_accounted_llmusage()
    url, settings.CLICKHOUSE_URL = settings.CLICKHOUSE_URL, "clickhouse://default@127.0.0.1:1/default"
    purge_history(before=timezone.localdate(now - timedelta(days=19)))
    settings.CLICKHOUSE_URL = url
    assert synced_through() is None  # ClickHouse still holds the purged records: not read
    assert _clickhouse_rows() == 20
    assert clickhouse_split(EVERY_RECORD, usage_matching(query=EVERY_RECORD)) is None

    counts = clickhouse_sync()
    assert counts["days_reloaded"] >= 2 and _clickhouse_rows() == 12
    assert_same_as_postgresql_alone(settings, now)


def test_backfill_command_loads_history_already_there_once(clickhouse, settings):
    now = timezone.now()
    for days in (3, 3, 4, 40):
        make_usage(model=LLMUsageHistory, use_time=now - timedelta(days=days), amount=Decimal("0.33333"))
    day = timezone.localdate(now - timedelta(days=3))

    call_command("backfill_clickhouse", "--start", day.isoformat(), "--end", day.isoformat())
    assert _clickhouse_rows() == 2 and synced_through() is None  # part of history: not read yet

    out = StringIO()
    call_command("backfill_clickhouse", stdout=out)
    assert _clickhouse_rows() == 4 and synced_through() is not None
    assert_same_as_postgresql_alone(settings, now)
    assert clickhouse_backfill()["days_reloaded"] == 0  # idempotent
    # The operator reads what was loaded: the records' days, and the rollups' days and buckets.
    said = r"reloaded \d+ \(2 records\).*Rollups: checked \d+ UTC days, replaced \d+ \(\d+ buckets\)"
    assert re.search(said, out.getvalue()), out.getvalue()


def test_with_clickhouse_unset_nothing_changes_and_the_driver_is_never_imported(settings):
    settings.CLICKHOUSE_URL = None
    now = timezone.now()
    _records(now)
    counts = backup_accounted_llmusage()
    assert "clickhouse" not in counts and "clickhouse" not in purge_history(before=timezone.localdate(now))
    assert synced_through() is None
    assert clickhouse_split(EVERY_RECORD, usage_matching(query=EVERY_RECORD)) is None
    # A process that loads every module that reads or writes usage never imports the driver.
    script = (
        "import sys, django; django.setup(); import llmlog.tasks, llmlog.selectors.stats,"
        " llmlog.selectors.totals, llmlog.retention, llmlog.api.urls;"
        " assert 'clickhouse_driver' not in sys.modules; print('unset ok')"
    )
    env = {key: value for key, value in os.environ.items() if key != "CLICKHOUSE_URL"}
    env["DJANGO_SETTINGS_MODULE"] = "tests.settings"
    ran = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env)
    assert "unset ok" in ran.stdout, ran.stderr[-2000:]


def _rollups() -> tuple[list[tuple], list[tuple]]:
    """ClickHouse's rollups and PostgreSQL's, every column (ids and built_at too), in one order."""
    columns = rollup_columns()
    clickhouse = clickhouse_execute(f"SELECT {column_list(columns)} FROM {ROLLUP_TABLE} FINAL")
    return sorted(clickhouse), sorted(UsageRollup.objects.values_list(*(column.source for column in columns)))


def assert_rollups_mirrored() -> int:
    """ClickHouse's rollups are PostgreSQL's, bucket for bucket; returns how many buckets."""
    clickhouse, postgresql = _rollups()
    assert clickhouse == postgresql
    return len(clickhouse)


def _late_records(now: datetime) -> tuple[LLMUsage, LLMUsage]:
    """Two records arriving late on the UTC day of the pending one (six days back, alone on its day):
    one into its bucket, one into an hour of its own."""
    hour = floor_hour(LLMUsage.objects.get(accounting_status="pending").use_time)
    other = hour + HOUR if hour.hour < 23 else hour - HOUR  # the same UTC day
    return make_usage(use_time=hour + timedelta(seconds=1)), make_usage(use_time=other, userorgid="globex")


def test_rollups_equal_postgresqls_bucket_for_bucket_as_hours_are_rebuilt_and_emptied(clickhouse):
    now = timezone.now()
    _records(now)
    build_usage_rollups(now=now)
    mirrored = backup_accounted_llmusage()["clickhouse"]["rollups"]  # the nightly move syncs them too
    assert mirrored["days_replaced"] == mirrored["days_checked"] >= 9
    buckets = assert_rollups_mirrored()
    assert buckets == UsageRollup.objects.count() == 21  # the accounted records and the pending one

    # Late records: the next build rebuilds the hours they landed in; the sync replaces their day only.
    _, alone = _late_records(now)
    build_usage_rollups(now=now)
    assert clickhouse_sync()["rollups"]["days_replaced"] == 1
    assert assert_rollups_mirrored() == buckets + 1

    # A delete that empties an hour (its day keeps another), then deletes that empty the day.
    usage_delete(id=alone.pk, actor="ops")
    build_usage_rollups(now=now)  # rebuilds the hours a delete marks (after its commit, outside tests)
    replaced = clickhouse_sync()["rollups"]
    assert replaced["days_replaced"] == 1 and replaced["loaded"] == 1  # the day's bucket left
    assert assert_rollups_mirrored() == buckets
    for record in LLMUsage.objects.filter(use_time__lt=now - timedelta(days=5)):
        usage_delete(id=record.pk, actor="ops")
    build_usage_rollups(now=now)
    replaced = clickhouse_sync()["rollups"]
    assert replaced["days_replaced"] == 1 and replaced["loaded"] == 0  # dropped
    assert assert_rollups_mirrored() == buckets - 1


def test_rollups_a_sync_missed_are_reconciled_and_a_rerun_never_doubles_a_bucket(clickhouse, settings):
    now = timezone.now()
    _records(now)
    build_usage_rollups(now=now)
    backup_accounted_llmusage()  # syncs; and the next build takes only hot records for late ones
    _late_records(now)
    make_usage(use_time=now - timedelta(days=20, hours=1))  # into an accounted record's bucket
    build_usage_rollups(now=now)

    url, settings.CLICKHOUSE_URL = settings.CLICKHOUSE_URL, "clickhouse://default@127.0.0.1:1/default"
    assert "error" in mirror.clickhouse_sync_quietly()  # ClickHouse away: the caller does not fail
    settings.CLICKHOUSE_URL = url
    clickhouse_rows, postgresql_rows = _rollups()
    assert clickhouse_rows != postgresql_rows  # behind
    assert clickhouse_sync()["rollups"]["days_replaced"] == 2
    buckets = assert_rollups_mirrored()

    assert clickhouse_sync()["rollups"]["days_replaced"] == 0  # a rerun writes nothing
    # A sync that died after loading: the same buckets written again are still one each.
    assert insert_records(UsageRollup.objects.all(), table=ROLLUP_TABLE, columns=rollup_columns()) == buckets
    assert assert_rollups_mirrored() == buckets
    assert clickhouse_backfill()["rollups"]["days_replaced"] == 0
