"""llmusage_history partitioned by month on PostgreSQL: the migration on a table with rows (and back),
the backup making the months it fills, rows leaving the DEFAULT partition, the purge dropping whole
months, and reads over history still right. The purge and transno tests run on SQLite too.

Months here are years back (2022-2025) so that they never meet the months of other tests; a test that
commits (transaction=True) drops the partitions it made, since TRUNCATE between tests keeps them."""

import threading
import uuid
from datetime import date, datetime, timedelta
from typing import Any

import pytest
from django.db import connection, transaction
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone

from llmlog import partitions
from llmlog.backup import backup_accounted_llmusage, purge_history
from llmlog.models import LLMUsage, LLMUsageHistory
from llmlog.partitions import (
    DEFAULT_PARTITION,
    drop_history_partition,
    ensure_history_partitions,
    history_partitions,
    month_partition_name,
)
from tests.conftest import bearer
from tests.factories import make_usage, usage_payload
from tests.llmlog.test_backup import rows, usage

BEFORE_PARTITIONING = [("llmlog", "0005_token_key_index")]
PARTITIONED = [("llmlog", "0006_partition_history")]
TRANSNO_PER_ORG = [("llmlog", "0007_tenant_transno_owner_audit")]
USAGE_SEQ = [("llmlog", "0008_usage_seq")]


def on(day: date, **fields: Any) -> LLMUsage:
    """An accounted llmusage record of `day`, ready for the backup to move."""
    return usage(days_ago=(timezone.localdate() - day).days, **fields)


def partition_of(record) -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT tableoid::regclass::text FROM llmusage_history WHERE id = %s", [record.pk])
        return cursor.fetchone()[0]


def partition_names() -> set[str]:
    return {partition.name for partition in history_partitions()}


def query(sql: str, params: Any = ()) -> list[tuple]:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall()


# --- the migration --------------------------------------------------------------------------------


def migrate(targets: list[tuple[str, str]]):
    """Migrate the test database to `targets`; returns the app registry of that state."""
    executor = MigrationExecutor(connection)
    executor.migrate(targets)
    return MigrationExecutor(connection).loader.project_state(targets).apps


def history_shape() -> dict[str, list]:
    """llmusage_history's constraints and indexes as PostgreSQL describes them (ONLY, which marks the
    index of a partitioned table, left out so that the two forms compare)."""
    return {
        "constraints": query(
            "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
            "WHERE conrelid = 'llmusage_history'::regclass ORDER BY conname"
        ),
        "indexes": [
            (name, definition.replace(" ON ONLY ", " ON "))
            for name, definition in query(
                "SELECT indexrelid::regclass::text, pg_get_indexdef(indexrelid) FROM pg_index "
                "WHERE indrelid = 'llmusage_history'::regclass ORDER BY 1"
            )
        ],
    }


def history_rows() -> list[tuple]:
    return query("SELECT * FROM llmusage_history ORDER BY id")


def is_partitioned() -> bool:
    return bool(query("SELECT 1 FROM pg_partitioned_table WHERE partrelid = 'llmusage_history'::regclass"))


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_the_migration_partitions_a_table_with_rows_and_goes_back_and_forth():
    try:
        apps = migrate(BEFORE_PARTITIONING)
        history = apps.get_model("llmlog", "LLMUsageHistory")
        days = [date(2025, 1, 15), date(2025, 2, 3), date(2025, 2, 28), date(2025, 4, 1)]
        for n, day in enumerate(days):
            history.objects.create(
                transno=f"mig-{n}",
                use_date=day,
                use_time=timezone.make_aware(datetime.combine(day, datetime.min.time())),
                model_name="gpt-4o",
                input_tokens=100,
                output_tokens=50,
                total_tokens=150,
                accounting_status="accounted",
                backup_time=timezone.now(),
            )
        plain_rows, plain_shape = history_rows(), history_shape()
        assert not is_partitioned()

        migrate(PARTITIONED)

        assert is_partitioned()
        assert query(
            "SELECT partstrat FROM pg_partitioned_table WHERE partrelid = 'llmusage_history'::regclass"
        ) == [("r",)]
        children = {
            name
            for (name,) in query(
                "SELECT inhrelid::regclass::text FROM pg_inherits "
                "WHERE inhparent = 'llmusage_history'::regclass"
            )
        }
        assert children == {
            "llmusage_history_y2025m01",
            "llmusage_history_y2025m02",
            "llmusage_history_y2025m03",  # between the oldest and newest row: a month ready for late rows
            "llmusage_history_y2025m04",
            DEFAULT_PARTITION,
        }
        per_partition = dict(
            query("SELECT tableoid::regclass::text, count(*) FROM llmusage_history GROUP BY 1")
        )
        assert per_partition == {
            "llmusage_history_y2025m01": 1,
            "llmusage_history_y2025m02": 2,
            "llmusage_history_y2025m04": 1,
        }
        assert history_rows() == plain_rows
        shape = history_shape()
        keys = {"llmusage_history_pkey", "llmusagehistory_transno_unique"}
        assert dict(shape["constraints"])["llmusage_history_pkey"] == "PRIMARY KEY (id, use_date)"
        assert dict(shape["constraints"])["llmusagehistory_transno_unique"] == "UNIQUE (transno, use_date)"
        assert [c for c in shape["constraints"] if c[0] not in keys] == [
            c for c in plain_shape["constraints"] if c[0] not in keys
        ]
        assert [i for i in shape["indexes"] if i[0] not in keys] == [
            i for i in plain_shape["indexes"] if i[0] not in keys
        ]
        assert query("SELECT count(*) FROM llmusage_all WHERE source = 'history'") == [(4,)]

        migrate(BEFORE_PARTITIONING)

        assert not is_partitioned()
        assert history_rows() == plain_rows
        assert history_shape() == plain_shape
        assert query("SELECT count(*) FROM llmusage_all WHERE source = 'history'") == [(4,)]

        migrate(PARTITIONED)

        assert is_partitioned()
        assert history_rows() == plain_rows
    finally:
        executor = MigrationExecutor(connection)
        migrate(executor.loader.graph.leaf_nodes())
    assert is_partitioned()
    for partition in history_partitions():
        if not partition.is_default:
            drop_history_partition(partition)


def history_keys() -> dict[str, str]:
    return dict(
        query(
            "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
            "WHERE conrelid = 'llmusage_history'::regclass AND contype IN ('p', 'u')"
        )
    )


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_the_per_org_transno_key_keeps_use_date_on_the_partitioned_table_both_ways():
    try:
        migrate(PARTITIONED)
        assert history_keys()["llmusagehistory_transno_unique"] == "UNIQUE (transno, use_date)"

        migrate(TRANSNO_PER_ORG)

        keys = history_keys()
        assert "llmusagehistory_transno_unique" not in keys
        assert keys["llmusagehistory_org_transno_unique"] == "UNIQUE (transno, userorgid, use_date)"
        assert query(
            "SELECT pg_get_constraintdef(oid) FROM pg_constraint "
            "WHERE conname = 'llmusage_org_transno_unique'"
        ) == [("UNIQUE (transno, userorgid)",)]

        migrate(PARTITIONED)

        assert history_keys()["llmusagehistory_transno_unique"] == "UNIQUE (transno, use_date)"
        assert "llmusagehistory_org_transno_unique" not in history_keys()
    finally:
        migrate(MigrationExecutor(connection).loader.graph.leaf_nodes())


# --- the backup makes the months it fills ---------------------------------------------------------


@pytest.mark.postgres
@pytest.mark.django_db
def test_backup_creates_the_partition_of_a_month_that_has_none_and_no_empty_month_between():
    old = on(date(2023, 2, 10))
    assert month_partition_name(date(2023, 2, 1)) not in partition_names()

    counts = backup_accounted_llmusage()

    assert counts["moved"] == 1
    this_month = timezone.localdate().replace(day=1)
    made = partition_names()
    assert partition_of(old) == "llmusage_history_y2023m02"
    assert {month_partition_name(this_month), month_partition_name(partitions.next_month(this_month))} <= made
    assert "llmusage_history_y2023m03" not in made  # months without records get no partition


@pytest.mark.postgres
@pytest.mark.django_db
def test_a_new_partition_has_every_index_and_key_of_the_parent():
    ensure_history_partitions(date(2023, 5, 1), date(2023, 5, 1))

    def indexes(table: str) -> int:
        return query("SELECT count(*) FROM pg_index WHERE indrelid = %s::regclass", [table])[0][0]

    assert (
        indexes("llmusage_history_y2023m05") == indexes("llmusage_history") == 16
    )  # 0008: seq, model prefix; 0011: provider cost drift
    keys = query(
        "SELECT pg_get_constraintdef(oid) FROM pg_constraint "
        "WHERE conrelid = 'llmusage_history_y2023m05'::regclass AND contype IN ('p', 'u') ORDER BY 1"
    )
    assert keys == [("PRIMARY KEY (id, use_date)",), ("UNIQUE (transno, userorgid, use_date)",)]


@pytest.mark.postgres
@pytest.mark.django_db
def test_rows_in_the_default_partition_move_out_when_their_month_gets_a_partition():
    june = [
        make_usage(model=LLMUsageHistory, use_time=timezone.make_aware(datetime(2023, 6, d, 12)))
        for d in (1, 15, 30)
    ]
    august = make_usage(model=LLMUsageHistory, use_time=timezone.make_aware(datetime(2023, 8, 2, 12)))
    assert {partition_of(record) for record in [*june, august]} == {DEFAULT_PARTITION}
    before = rows(LLMUsageHistory)

    created = ensure_history_partitions(date(2023, 6, 20), date(2023, 7, 5))

    assert created == ["llmusage_history_y2023m06", "llmusage_history_y2023m07"]
    assert {partition_of(record) for record in june} == {"llmusage_history_y2023m06"}
    assert partition_of(august) == DEFAULT_PARTITION
    assert rows(LLMUsageHistory) == before
    assert ensure_history_partitions(date(2023, 6, 1), date(2023, 7, 31)) == []  # nothing left to make


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_two_runs_making_the_same_month_at_once_make_it_once():
    start = threading.Barrier(2)
    made: list[list[str]] = []

    def run() -> None:
        try:
            start.wait()
            made.append(ensure_history_partitions(date(2022, 3, 1), date(2022, 3, 1)))
        finally:
            connection.close()

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert sorted(made) == [[], ["llmusage_history_y2022m03"]]
    [march] = [p for p in history_partitions() if p.name == "llmusage_history_y2022m03"]
    assert drop_history_partition(march) == 0


def test_on_sqlite_partition_upkeep_does_nothing(db):
    if connection.vendor == "postgresql":
        pytest.skip("SQLite behaviour")
    assert ensure_history_partitions(date(2023, 1, 1), date(2023, 12, 1)) == []
    assert history_partitions() == []


# --- the purge drops whole months -----------------------------------------------------------------


@pytest.mark.django_db
def test_purge_drops_whole_months_and_deletes_the_rest_in_batches_with_the_right_count():
    gone = [on(date(2024, 1, 5)), on(date(2024, 1, 31)), *(on(date(2024, 2, d)) for d in (1, 14, 29))]
    gone += [on(date(2024, 3, 2)), on(date(2024, 3, 9))]
    kept = [on(date(2024, 3, 15)), on(date(2024, 3, 20))]
    backup_accounted_llmusage()

    counts = purge_history(before=date(2024, 3, 15), batch_size=1)

    assert counts["purged"] == len(gone) == 7
    assert set(LLMUsageHistory.objects.values_list("pk", flat=True)) == {record.pk for record in kept}
    if connection.vendor == "postgresql":
        assert (counts["partitions_dropped"], counts["dropped_rows"], counts["batches"]) == (2, 5, 2)
        names = partition_names()
        assert "llmusage_history_y2024m03" in names
        assert not {"llmusage_history_y2024m01", "llmusage_history_y2024m02"} & names
    else:
        assert (counts["partitions_dropped"], counts["dropped_rows"], counts["batches"]) == (0, 0, 7)


@pytest.mark.django_db
def test_purge_dry_run_drops_nothing():
    on(date(2024, 1, 5))
    backup_accounted_llmusage()
    before = partition_names()

    counts = purge_history(before=date(2024, 3, 1), dry_run=True)

    assert counts["would_purge"] == 1
    assert LLMUsageHistory.objects.count() == 1
    assert partition_names() == before


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_month_held_by_a_long_reader_is_deleted_in_batches_instead_and_dropped_next_time(monkeypatch):
    monkeypatch.setattr(partitions, "LOCK_TIMEOUT", "200ms")
    for day in (3, 4, 5):
        on(date(2022, 9, day))
    backup_accounted_llmusage()
    reading, done = threading.Event(), threading.Event()

    def long_report() -> None:
        try:
            with transaction.atomic():
                query("SELECT count(*) FROM llmusage_history")  # holds ACCESS SHARE until the end
                reading.set()
                done.wait(timeout=30)
        finally:
            connection.close()

    reader = threading.Thread(target=long_report)
    reader.start()
    assert reading.wait(timeout=10)
    try:
        counts = purge_history(before=date(2022, 10, 1), batch_size=2)
    finally:
        done.set()
        reader.join(timeout=30)

    assert (counts["purged"], counts["partitions_dropped"], counts["batches"]) == (3, 0, 2)
    assert not LLMUsageHistory.objects.exists()
    assert "llmusage_history_y2022m09" in partition_names()

    counts = purge_history(before=date(2022, 10, 1))

    assert (counts["purged"], counts["partitions_dropped"]) == (0, 1)
    assert "llmusage_history_y2022m09" not in partition_names()
    for partition in history_partitions():  # what the backup made ahead (this month and the next)
        if not partition.is_default and partition.start > date(2025, 12, 31):
            assert drop_history_partition(partition) == 0


# --- transno stays unique across history ----------------------------------------------------------


@pytest.mark.django_db
def test_a_transno_already_in_history_never_reaches_history_a_second_time(api, platform_key):
    """The database's unique key is (transno, use_date) on PostgreSQL; the app keeps transno unique."""
    three_days_ago = (timezone.now() - timedelta(days=3)).isoformat()
    first = usage_payload(transno="once", use_time=three_days_ago)
    assert api.post("/api/llmusage/", first, format="json", **bearer(platform_key)).status_code == 201
    LLMUsage.objects.filter(transno="once").update(accounting_status="accounted")
    assert backup_accounted_llmusage()["moved"] == 1

    same = api.post("/api/llmusage/", first, format="json", **bearer(platform_key))
    other_day = api.post(
        "/api/llmusage/",
        usage_payload(transno="once", use_time=timezone.now().isoformat()),
        format="json",
        **bearer(platform_key),
    )
    bulk = [usage_payload(transno="once", use_time=timezone.now().isoformat())] + [
        usage_payload(transno=f"new-{n}")
        for n in range(11)  # past 10 rows: ingest's COPY path
    ]
    in_bulk = api.post("/api/llmusage/", bulk, format="json", **bearer(platform_key))
    LLMUsage.objects.update(accounting_status="accounted", use_date=timezone.localdate() - timedelta(days=1))
    backup_accounted_llmusage()

    assert same.status_code == 200  # the same record again: a duplicate, nothing written
    assert other_day.status_code == 409
    assert in_bulk.json()["items"][0]["status"] == "conflict"
    assert LLMUsageHistory.objects.filter(transno="once").count() == 1
    assert not LLMUsage.objects.filter(transno="once").exists()
    assert LLMUsageHistory.objects.count() == 12


# --- reads over a partitioned history -------------------------------------------------------------


@pytest.mark.django_db
def test_list_get_item_and_count_over_history_in_several_months_and_the_default(api, acme_key, platform_key):
    moved = [on(date(2023, 10, 30)), on(date(2023, 11, 2)), on(date(2023, 12, 24))]
    backup_accounted_llmusage()
    stray = make_usage(model=LLMUsageHistory, use_time=timezone.make_aware(datetime(2021, 4, 1, 9)))
    records = [*moved, stray]
    if connection.vendor == "postgresql":
        assert partition_of(stray) == DEFAULT_PARTITION
        assert partition_of(moved[0]) == "llmusage_history_y2023m10"

    def get(url: str, key: str = acme_key, **params) -> Any:
        response = api.get(url, params, **bearer(key))
        assert response.status_code == 200, response.content
        return response.json()

    listed = get("/api/llmusage-history/", page_size=100)["results"]
    assert [row["id"] for row in listed] == [str(r.pk) for r in sorted(records, key=lambda r: r.use_time)][
        ::-1
    ]
    for record in records:
        assert get(f"/api/llmusage-history/{record.pk}/")["transno"] == record.transno
        assert get(f"/api/llmusage/{record.pk}/")["transno"] == record.transno  # hot and history alike
    assert get("/api/llmusage-history/count/") == {"count": 4, "estimated": False}
    november = {"start_time": "2023-11-01T00:00:00+00:00", "end_time": "2023-12-01T00:00:00+00:00"}
    assert get("/api/llmusage-history/count/", **november)["count"] == 1
    assert get("/api/llmusage/count/", **november)["count"] == 1


@pytest.mark.django_db(transaction=True)
def test_the_seq_migration_numbers_existing_records_in_id_order_over_both_tables_and_goes_back():
    """0008 on rows: every record of llmusage and llmusage_history numbered by id (uuid7: time order),
    the counter past the largest, the view with seq; back to 0007 and forward again."""
    try:
        apps = migrate(TRANSNO_PER_ORG)
        hot, history = apps.get_model("llmlog", "LLMUsage"), apps.get_model("llmlog", "LLMUsageHistory")
        day = date(2025, 6, 2)
        common = {
            "use_date": day,
            "use_time": timezone.make_aware(datetime.combine(day, datetime.min.time())),
            "model_name": "gpt-4o",
            "accounting_status": "accounted",
        }
        # ids in a known order, alternating between the tables
        ids = [f"0190a000-0000-7000-8000-{n:012d}" for n in range(1, 6)]
        for n, record_id in enumerate(ids):
            if n % 2:
                history.objects.create(
                    id=record_id, transno=f"seq-mig-{n}", backup_time=timezone.now(), **common
                )
            else:
                hot.objects.create(id=record_id, transno=f"seq-mig-{n}", **common)

        seq_apps = migrate(USAGE_SEQ)

        numbered = query("SELECT id, seq FROM llmusage_all ORDER BY id")
        assert [str(uuid.UUID(str(record_id))) for record_id, _ in numbered] == ids  # SQLite: hex
        assert [seq for _, seq in numbered] == [1, 2, 3, 4, 5]
        # the next record continues after the largest number (the model of 0008: later columns absent)
        hot_at_seq = seq_apps.get_model("llmlog", "LLMUsage")
        new = hot_at_seq.objects.create(transno="seq-mig-new", **common)
        assert hot_at_seq.objects.get(pk=new.pk).seq == 6

        migrate(TRANSNO_PER_ORG)

        columns = {
            table: [
                c.name for c in connection.introspection.get_table_description(connection.cursor(), table)
            ]
            for table in ("llmusage", "llmusage_history", "llmusage_all")
        }
        assert all("seq" not in names for names in columns.values())
        assert query("SELECT count(*) FROM llmusage_all") == [(6,)]

        migrate(USAGE_SEQ)

        assert [seq for _, seq in query("SELECT id, seq FROM llmusage_all ORDER BY id")] == [1, 2, 3, 4, 5, 6]
    finally:
        executor = MigrationExecutor(connection)
        migrate(executor.loader.graph.leaf_nodes())
    for partition in history_partitions():
        if not partition.is_default:
            drop_history_partition(partition)
