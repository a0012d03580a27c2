from collections import defaultdict
from datetime import UTC, timedelta
from decimal import Decimal
from io import StringIO

import pytest
from django.conf import settings
from django.core.management import call_command
from django.utils import timezone

from llmlog.backup import backup_accounted_llmusage, purge_history
from llmlog.edits import usage_delete, usage_update
from llmlog.filters import native_query
from llmlog.models import TOKEN_COUNT_FIELDS, JobRun, UsageAll, UsageRollup, UsageRollupState
from llmlog.queries import UsageQuery
from llmlog.retention import usage_delete_before
from llmlog.rollups import SETTLE, build_usage_rollups, floor_hour, usage_rollups_rebuild
from llmlog.selectors.stats import usage_stats
from llmlog.tasks import build_usage_rollups as build_usage_rollups_task
from tests.factories import QUERY_RECORD, make_usage, move_to_history

SUMS = (
    *TOKEN_COUNT_FIELDS,
    "total_tokens",
    "amount",
    "cost",
)


def buckets_from_rows() -> dict[tuple, dict]:
    """The rollups as they should be, summed in Python from every row, hot and history."""
    out: dict[tuple, dict] = defaultdict(lambda: {"requests": 0, **dict.fromkeys(SUMS, 0)})
    for row in UsageAll.objects.all():
        key = (floor_hour(row.use_time), row.userorgid, row.model_name, row.status)
        out[key]["requests"] += 1
        for name in SUMS:
            out[key][name] += getattr(row, name) or 0
    return dict(out)


def buckets_stored(before=None) -> dict[tuple, dict]:
    rollups = UsageRollup.objects.all()
    if before is not None:
        rollups = rollups.filter(hour__lt=before)
    return {
        (r.hour.astimezone(UTC), r.userorgid, r.model_name, r.status): {
            "requests": r.requests,
            **{name: getattr(r, name) for name in SUMS},
        }
        for r in rollups
    }


@pytest.fixture
def hours_ago():
    """Moments in the past, counted in hours before the current hour began, plus minutes."""
    current = floor_hour(timezone.now())
    return lambda hours, minutes=0: current - timedelta(hours=hours) + timedelta(minutes=minutes)


def mixed_usage(hours_ago) -> None:
    make_usage(QUERY_RECORD, use_time=hours_ago(30, 5), amount=Decimal("0.12345"), cost=Decimal("0.1"))
    make_usage(
        QUERY_RECORD,
        use_time=hours_ago(30, 50),
        model_name="claude",
        input_tokens=7,
        output_tokens=3,
        cached_tokens=0,
    )
    make_usage(
        QUERY_RECORD, use_time=hours_ago(5, 1), userorgid="globex", status="failed", amount=None, cost=None
    )
    make_usage(
        QUERY_RECORD,
        use_time=hours_ago(5, 59),
        reasoning_tokens=150,
        cache_creation_tokens=50,
        web_search_count=2,
    )
    make_usage(QUERY_RECORD, use_time=hours_ago(2, 30), image_input_tokens=20)
    make_usage(QUERY_RECORD, use_time=hours_ago(0, 1))  # the open hour
    move_to_history(make_usage(QUERY_RECORD, use_time=hours_ago(30, 20), amount=Decimal("3")))


@pytest.mark.django_db
def test_rollups_agree_with_the_rows(hours_ago):
    mixed_usage(hours_ago)

    counts = build_usage_rollups()

    built_through = UsageRollupState.objects.get().built_through
    assert built_through == floor_hour(timezone.now() - SETTLE)
    expected = {key: sums for key, sums in buckets_from_rows().items() if key[0] < built_through}
    assert buckets_stored() == expected
    assert counts["buckets"] == len(expected) == 5
    assert JobRun.objects.get(job="build_usage_rollups").counts == counts


@pytest.mark.django_db
def test_the_open_hour_is_never_built_and_stats_read_it_from_the_rows(hours_ago):
    make_usage(QUERY_RECORD, use_time=hours_ago(3))
    make_usage(QUERY_RECORD, use_time=timezone.now() - timedelta(seconds=1))
    build_usage_rollups()

    assert not UsageRollup.objects.filter(hour__gte=floor_hour(timezone.now())).exists()
    stats = usage_stats(query=UsageQuery(org="acme"))
    assert stats["requests"] == 2
    assert stats["rollup_hours"][1] <= floor_hour(timezone.now())
    assert stats["rpm"] == 1


@pytest.mark.django_db
def test_rebuilding_an_hour_replaces_its_buckets(hours_ago):
    mixed_usage(hours_ago)
    build_usage_rollups()
    make_usage(QUERY_RECORD, use_time=hours_ago(30, 40), amount=Decimal("1"))  # lands in a built hour

    usage_rollups_rebuild(start=hours_ago(30), end=hours_ago(29))
    usage_rollups_rebuild(start=hours_ago(30, 10), end=hours_ago(30, 11))  # widened to the whole hour

    assert buckets_stored() == {key: s for key, s in buckets_from_rows().items() if key[0] < hours_ago(0)}


@pytest.mark.django_db
def test_a_late_record_is_picked_up_by_the_next_run(hours_ago):
    mixed_usage(hours_ago)
    build_usage_rollups()
    make_usage(
        QUERY_RECORD, use_time=hours_ago(5, 30), model_name="late-model"
    )  # ingested now, for 5 hours ago

    counts = build_usage_rollups()

    # Records ingested within SCAN_OVERLAP of the last scan are looked at again: here, all of them.
    assert counts["late_hours"] >= 1
    assert UsageRollup.objects.filter(model_name="late-model").get().requests == 1
    built_through = UsageRollupState.objects.get().built_through
    assert buckets_stored() == {k: s for k, s in buckets_from_rows().items() if k[0] < built_through}


@pytest.mark.django_db
def test_stats_from_rollups_equal_stats_from_rows(hours_ago):
    mixed_usage(hours_ago)
    ranges = [
        {},
        {"start_time": hours_ago(31, 10).isoformat(), "end_time": hours_ago(2, 45).isoformat()},
        {"start_time": hours_ago(30, 30).isoformat(), "model_name": "gpt-4o"},
        {"status": "failed"},
        {"userorgid": "globex"},
    ]
    from_rows = [usage_stats(query=native_query(params=params)) for params in ranges]
    org_from_rows = usage_stats(query=UsageQuery(org="acme"))

    build_usage_rollups()
    from_rollups = [usage_stats(query=native_query(params=params)) for params in ranges]

    for before, after in zip(from_rows, from_rollups, strict=True):
        assert before.pop("rollup_hours") is None
        assert after.pop("rollup_hours") is not None
        assert after == before
    org_from_rollups = usage_stats(query=UsageQuery(org="acme"))
    assert org_from_rollups["rollup_hours"] is not None
    org_from_rollups.pop("rollup_hours"), org_from_rows.pop("rollup_hours")
    assert org_from_rollups == org_from_rows


@pytest.mark.django_db
def test_stats_under_a_filter_the_rollups_do_not_carry_read_the_rows(hours_ago):
    make_usage(QUERY_RECORD, use_time=hours_ago(4), feature="agent")
    make_usage(QUERY_RECORD, use_time=hours_ago(4), feature="chat")
    build_usage_rollups()

    stats = usage_stats(query=native_query(params={"feature": "agent"}))

    assert stats["rollup_hours"] is None
    assert stats["requests"] == 1


@pytest.mark.django_db
def test_stats_answer_the_same_before_and_after_the_move_to_history(hours_ago):
    records = [make_usage(QUERY_RECORD, use_time=hours_ago(h, 7 * h)) for h in (1, 3, 26, 27)]
    build_usage_rollups()
    params = {"start_time": hours_ago(28, 30).isoformat()}
    before = usage_stats(query=native_query(org="acme", params=params))

    move_to_history(*records[2:])
    after_move = usage_stats(query=native_query(org="acme", params=params))
    usage_rollups_rebuild(start=hours_ago(28), end=hours_ago(0))  # the nightly move changes no bucket
    after_rebuild = usage_stats(query=native_query(org="acme", params=params))

    assert before == after_move == after_rebuild
    assert before["requests"] == 4


@pytest.mark.django_db
def test_correcting_or_deleting_a_record_rebuilds_its_hour(hours_ago, django_capture_on_commit_callbacks):
    record = make_usage(QUERY_RECORD, use_time=hours_ago(4), accounting_status="pending", amount=Decimal("1"))
    gone = make_usage(QUERY_RECORD, use_time=hours_ago(4), accounting_status="failed")
    build_usage_rollups()

    with django_capture_on_commit_callbacks(execute=True):  # the rebuild runs once the edit commits
        usage_update(id=record.pk, changes={"amount": Decimal("5")}, actor="test")
        usage_delete(id=gone.pk, actor="test")

    bucket = UsageRollup.objects.get()
    assert bucket.requests == 1 and bucket.amount == Decimal("5")


@pytest.mark.django_db
def test_new_apis_delete_rebuilds_the_hours_it_emptied(hours_ago):
    mixed_usage(hours_ago)
    make_usage(
        QUERY_RECORD, use_time=hours_ago(30, 40), accounting_status="pending"
    )  # never deleted: still to post
    build_usage_rollups()

    deleted = usage_delete_before(before=hours_ago(4), batch_size=2)

    built_through = UsageRollupState.objects.get().built_through
    assert deleted == 5
    assert buckets_stored() == {
        key: sums for key, sums in buckets_from_rows().items() if key[0] < built_through
    }
    assert (
        usage_stats(query=native_query(org="acme", params={"end_time": hours_ago(4).isoformat()}))["requests"]
        == 1
    )


@pytest.mark.django_db
def test_the_retention_purge_rebuilds_the_hours_it_emptied(hours_ago):
    day = timedelta(days=1)
    make_usage(QUERY_RECORD, use_time=hours_ago(24 * 40), amount=Decimal("2"))
    make_usage(QUERY_RECORD, use_time=hours_ago(24 * 40, 30), accounting_status="failed")  # stays in llmusage
    make_usage(QUERY_RECORD, use_time=hours_ago(24 * 3))
    backup_accounted_llmusage()
    build_usage_rollups()
    old_hour = floor_hour(hours_ago(24 * 40))
    assert UsageRollup.objects.get(hour=old_hour, status="success").requests == 2

    counts = purge_history(before=timezone.localdate() - 10 * day)

    built_through = UsageRollupState.objects.get().built_through
    assert counts["purged"] == 1 and counts["rollup_buckets"] >= 1
    assert buckets_stored() == {
        key: sums for key, sums in buckets_from_rows().items() if key[0] < built_through
    }
    assert UsageRollup.objects.get(hour=old_hour).requests == 1  # the failed record left in llmusage


@pytest.mark.django_db
def test_first_run_on_an_empty_database_only_sets_the_watermark():
    counts = build_usage_rollups()

    assert counts["buckets"] == 0
    assert UsageRollupState.objects.get().built_through == floor_hour(timezone.now() - SETTLE)


@pytest.mark.django_db
def test_command_builds_and_rebuilds(hours_ago):
    make_usage(QUERY_RECORD, use_time=hours_ago(3))
    out = StringIO()
    call_command("build_usage_rollups", stdout=out)
    assert "Built" in out.getvalue()

    UsageRollup.objects.all().delete()
    start, end = hours_ago(4).isoformat(), hours_ago(2).isoformat()
    call_command("build_usage_rollups", "--start", start, "--end", end, stdout=out)
    assert UsageRollup.objects.get().requests == 1


def test_beat_builds_rollups_every_five_minutes():
    entry = settings.CELERY_BEAT_SCHEDULE["build_usage_rollups"]
    assert entry["task"] == "llmlog.tasks.build_usage_rollups"
    assert entry["schedule"].minute == set(range(0, 60, 5))


def test_task_builds_rollups_through_a_real_worker(celery_worker_process, hours_ago):
    make_usage(QUERY_RECORD, use_time=hours_ago(2), amount=Decimal("2"))

    counts = build_usage_rollups_task.delay().get(timeout=60)

    assert counts["buckets"] == 1
    assert UsageRollup.objects.get().amount == Decimal("2")
    assert JobRun.objects.get(job="build_usage_rollups").status == JobRun.Status.SUCCEEDED


# --- an hour that cannot be built blocks no other --------------------------------------------------


@pytest.mark.django_db
def test_an_hour_that_fails_is_recorded_and_later_hours_still_build():
    now = timezone.now()
    bad_hour = floor_hour(now - timedelta(hours=5))
    # Rows stored before ingest bounded token counts (written directly, as ingest never would): their
    # sum is past a 64-bit bucket (PostgreSQL: bigint out of range; SQLite: integer overflow).
    for _ in range(2):
        make_usage(
            QUERY_RECORD, use_time=bad_hour + timedelta(minutes=10), input_tokens=2**62, output_tokens=0
        )
    later = make_usage(QUERY_RECORD, use_time=bad_hour + timedelta(hours=2, minutes=5))

    counts = build_usage_rollups(now=now)

    assert [item["hour"] for item in counts["failed_hours"]] == [bad_hour.isoformat()]
    assert counts["built_through"] == floor_hour(now - SETTLE).isoformat()
    later_bucket = UsageRollup.objects.get(hour=floor_hour(later.use_time))
    assert (later_bucket.requests, later_bucket.total_tokens) == (1, later.total_tokens)
    assert not UsageRollup.objects.filter(hour=bad_hour).exists()
    run = JobRun.objects.filter(job="build_usage_rollups").latest("started_at")
    assert run.status == JobRun.Status.SUCCEEDED
    assert run.counts["failed_hours"][0]["hour"] == bad_hour.isoformat()
    assert run.error.startswith(f"1 hour(s) not built: {bad_hour.isoformat()}: ")


@pytest.mark.django_db
def test_a_failed_hour_is_tried_again_and_builds_once_its_rows_are_fixed():
    now = timezone.now()
    bad_hour = floor_hour(now - timedelta(hours=3))
    rows = [
        make_usage(
            QUERY_RECORD, use_time=bad_hour + timedelta(minutes=1), input_tokens=2**62, output_tokens=0
        )
        for _ in "ab"
    ]
    assert build_usage_rollups(now=now)["failed_hours"]

    type(rows[0]).objects.filter(pk=rows[0].pk).update(input_tokens=200, total_tokens=200)
    counts = build_usage_rollups(now=now + timedelta(minutes=1))

    assert "failed_hours" not in counts
    assert UsageRollup.objects.get(hour=bad_hour).requests == 2
