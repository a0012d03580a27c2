"""The nightly backup to history and the retention purge: the services, commands, tasks and schedule."""

import threading
from datetime import datetime, time, timedelta
from decimal import Decimal
from io import StringIO
from itertools import count
from typing import Any

import pytest
from celery.schedules import crontab
from django.conf import settings
from django.core.management import CommandError, call_command
from django.db import connection
from django.utils import timezone

from llmlog import tasks
from llmlog.backup import BACKUP_JOB, PURGE_JOB, backup_accounted_llmusage, purge_history
from llmlog.demo import load_demo_data
from llmlog.models import JobRun, LLMUsage, LLMUsageHistory

FIELDS = [field.attname for field in LLMUsage._meta.concrete_fields]
_numbers = count()


def today():
    return timezone.localdate()


def usage(*, days_ago: int, status: str = "accounted", **fields: Any) -> LLMUsage:
    """One record of `days_ago` days back, with every kind of column filled so a move can be compared."""
    n = next(_numbers)
    use_date = today() - timedelta(days=days_ago)
    use_time = timezone.make_aware(datetime.combine(use_date, time(10, 15)))
    values: dict[str, Any] = {
        "transno": f"bk-{n:06d}",
        "use_date": use_date,
        "use_time": use_time,
        "responsed_seconds": 0.25,
        "finish_seconds": 1.5,
        "userid": "u-1",
        "userorgid": "acme",
        "group": "vip",
        "request_ip": "10.1.2.3",
        "model_name": "gpt-4o",
        "llmid": "gpt-4o",
        "ownerid": "openai",
        "is_stream": True,
        "input_tokens": 1200,
        "output_tokens": 300,
        "cached_tokens": 200,
        "total_tokens": 1500,
        "usages": {"prompt_tokens": 1200, "completion_tokens": 300},
        "amount": Decimal("0.00600"),
        "cost": Decimal("0.00480"),
        "price": {"sale": {"input": "2.50"}},
        "ioinfo": {"request": "hi", "response": "hello", "truncated": False},
        "accounting_status": status,
        "accounted_at": use_time + timedelta(minutes=1) if status == "accounted" else None,
        "metadata": {"incidentId": n},
        "payload_hash": f"{n:064d}",
    }
    values.update(fields)
    return LLMUsage.objects.create(**values)


def rows(model, ids=None) -> dict[Any, tuple]:
    """Every record of `model` (or those of `ids`) as id -> all usage columns."""
    queryset = model.objects.all() if ids is None else model.objects.filter(pk__in=ids)
    return {values[0]: values for values in queryset.values_list(*FIELDS)}


def ids(model) -> set:
    return set(model.objects.values_list("pk", flat=True))


@pytest.mark.django_db
class TestBackup:
    def test_moves_accounted_and_skipped_records_of_past_days_keeping_id_and_every_column(self):
        accounted = usage(days_ago=1)
        skipped = usage(days_ago=3, status="skipped", amount=Decimal(0), cost=Decimal(0))
        before = rows(LLMUsage)
        started = timezone.now()

        backup_accounted_llmusage()

        assert ids(LLMUsage) == set()
        assert rows(LLMUsageHistory) == before
        history = LLMUsageHistory.objects.in_bulk([accounted.pk, skipped.pk])
        assert all(started <= record.backup_time <= timezone.now() for record in history.values())

    def test_leaves_pending_and_failed_records_of_past_days_untouched(self):
        stay = [usage(days_ago=2, status="pending"), usage(days_ago=40, status="failed")]
        usage(days_ago=2)
        untouched = rows(LLMUsage, [record.pk for record in stay])

        backup_accounted_llmusage()

        assert rows(LLMUsage) == untouched
        assert LLMUsageHistory.objects.count() == 1

    def test_keeps_todays_records_and_those_of_the_given_day(self):
        today_record = usage(days_ago=0)
        day_before = usage(days_ago=1)
        older = usage(days_ago=2)

        backup_accounted_llmusage(before=today() - timedelta(days=1))

        assert ids(LLMUsage) == {today_record.pk, day_before.pk}
        assert ids(LLMUsageHistory) == {older.pk}

    def test_returns_and_records_the_counts(self):
        for _ in range(3):
            usage(days_ago=1)
        usage(days_ago=1, status="pending")
        usage(days_ago=5, status="failed")
        usage(days_ago=5, status="failed")
        usage(days_ago=0, status="pending")  # today's: not "left behind"

        counts = backup_accounted_llmusage(batch_size=2)

        assert counts == {
            "before": today().isoformat(),
            "moved": 3,
            "batches": 2,
            "pending_left": 1,
            "failed_left": 2,
        }
        run = JobRun.objects.get(job=BACKUP_JOB)
        assert (run.status, run.counts) == ("succeeded", counts)

    def test_small_batches_move_every_record_exactly_once(self):
        movable = {
            usage(days_ago=1 + i % 3, status="accounted" if i % 4 else "skipped").pk for i in range(23)
        }
        staying = {usage(days_ago=1, status="pending").pk for _ in range(4)}
        before = rows(LLMUsage)

        counts = backup_accounted_llmusage(batch_size=5)

        assert counts["moved"] == 23 and counts["batches"] == 5
        assert ids(LLMUsageHistory) == movable
        assert ids(LLMUsage) == staying
        after = rows(LLMUsage) | rows(LLMUsageHistory)
        assert after == before

    def test_a_second_run_finds_nothing_to_move(self):
        usage(days_ago=1)
        backup_accounted_llmusage()

        counts = backup_accounted_llmusage()

        assert counts["moved"] == 0
        assert LLMUsageHistory.objects.count() == 1

    def test_dry_run_counts_and_moves_nothing(self):
        usage(days_ago=1)
        usage(days_ago=2, status="skipped")
        usage(days_ago=2, status="pending")
        before = rows(LLMUsage)

        counts = backup_accounted_llmusage(dry_run=True)

        assert counts["would_move"] == 2 and counts["moved"] == 0 and counts["pending_left"] == 1
        assert rows(LLMUsage) == before
        assert not LLMUsageHistory.objects.exists()
        assert not JobRun.objects.exists()

    def test_refuses_a_day_after_today(self):
        with pytest.raises(ValueError, match="before"):
            backup_accounted_llmusage(before=today() + timedelta(days=1))


@pytest.mark.django_db(transaction=True)
def test_runs_started_together_move_every_record_once():
    load_demo_data(rows=3000, days=10)
    LLMUsage.objects.update(use_date=today() - timedelta(days=1), accounting_status="accounted")
    pending = set(list(ids(LLMUsage))[::7])
    LLMUsage.objects.filter(pk__in=pending).update(accounting_status="pending")
    before = rows(LLMUsage)
    results = _run_together(2, lambda: backup_accounted_llmusage(batch_size=50))

    assert sum(result["moved"] for result in results) == len(before) - len(pending)
    assert ids(LLMUsage) == pending
    assert rows(LLMUsage) | rows(LLMUsageHistory) == before


def _run_together(n: int, job) -> list[dict]:
    """Start `n` runs of `job` at the same instant, each in its own thread with its own connection."""
    start = threading.Barrier(n)
    results: list[dict] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            start.wait()
            results.append(job())
        except BaseException as exc:  # reported by the test's thread below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=run) for _ in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors
    assert len(results) == n
    return results


@pytest.mark.django_db
class TestPurge:
    def test_does_nothing_while_retention_is_unset(self, settings):
        settings.LLMLOG_HISTORY_RETENTION_DAYS = None
        usage(days_ago=3000)
        backup_accounted_llmusage()

        counts = purge_history()

        assert counts["purged"] == 0 and counts["before"] is None
        assert LLMUsageHistory.objects.count() == 1
        assert JobRun.objects.get(job=PURGE_JOB).status == "succeeded"

    def test_deletes_history_older_than_the_retention_by_use_date(self, settings):
        settings.LLMLOG_HISTORY_RETENTION_DAYS = 30
        old = [usage(days_ago=31 + i) for i in range(5)]
        kept = [usage(days_ago=30), usage(days_ago=2)]
        backup_accounted_llmusage()
        hot_old = usage(days_ago=90, status="failed")  # not history: retention never touches llmusage

        counts = purge_history(batch_size=2)

        # Months wholly before the cut-off go by dropping their partition (PostgreSQL); the rest in
        # batches of 2. Which of the old days share a whole month depends on today's date.
        batched = len(old) - counts["dropped_rows"]
        assert counts["purged"] == len(old) and counts["batches"] == -(-batched // 2)
        assert counts["before"] == (today() - timedelta(days=30)).isoformat()
        assert ids(LLMUsageHistory) == {record.pk for record in kept}
        assert ids(LLMUsage) == {hot_old.pk}

    def test_explicit_before_purges_even_without_retention(self, settings):
        settings.LLMLOG_HISTORY_RETENTION_DAYS = None
        usage(days_ago=10)
        kept = usage(days_ago=5)
        backup_accounted_llmusage()

        counts = purge_history(before=today() - timedelta(days=5))

        assert counts["purged"] == 1
        assert ids(LLMUsageHistory) == {kept.pk}

    def test_dry_run_counts_and_deletes_nothing(self, settings):
        settings.LLMLOG_HISTORY_RETENTION_DAYS = 7
        usage(days_ago=8)
        usage(days_ago=9)
        usage(days_ago=1)
        backup_accounted_llmusage()

        counts = purge_history(dry_run=True)

        assert counts["would_purge"] == 2
        assert LLMUsageHistory.objects.count() == 3


@pytest.mark.django_db
class TestCommands:
    def test_backup_command_moves_and_reports(self):
        usage(days_ago=3)
        usage(days_ago=3, status="failed")
        usage(days_ago=1)
        out = StringIO()

        call_command(
            "backup_accounted_llmusage",
            "--before",
            (today() - timedelta(days=2)).isoformat(),
            "--batch-size",
            "10",
            stdout=out,
        )

        assert "Moved 1 records" in out.getvalue()
        assert "1 failed" in out.getvalue()
        assert LLMUsageHistory.objects.count() == 1

    def test_backup_command_dry_run_moves_nothing(self):
        usage(days_ago=3)
        out = StringIO()

        call_command("backup_accounted_llmusage", "--dry-run", stdout=out)

        assert "Dry run: 1 records" in out.getvalue()
        assert LLMUsage.objects.count() == 1

    @pytest.mark.parametrize(
        ("args", "named"),
        [
            (["--before", "yesterday"], "--before"),
            (["--before", "2026-02-30"], "--before"),
            (["--batch-size", "0"], "--batch-size"),
            (["--batch-size", "many"], "--batch-size"),
        ],
    )
    @pytest.mark.parametrize("command", ["backup_accounted_llmusage", "purge_history"])
    def test_bad_arguments_are_refused_naming_the_argument(self, command, args, named):
        with pytest.raises(CommandError, match=named):
            call_command(command, *args)

    def test_backup_command_refuses_a_future_day(self):
        with pytest.raises(CommandError, match="before"):
            call_command("backup_accounted_llmusage", "--before", (today() + timedelta(days=2)).isoformat())

    def test_purge_command_without_retention_keeps_history(self, settings):
        settings.LLMLOG_HISTORY_RETENTION_DAYS = None
        usage(days_ago=400)
        backup_accounted_llmusage()
        out = StringIO()

        call_command("purge_history", stdout=out)

        assert "history kept" in out.getvalue()
        assert LLMUsageHistory.objects.count() == 1

    def test_purge_command_with_before_and_dry_run(self):
        usage(days_ago=10)
        backup_accounted_llmusage()
        out = StringIO()
        before = (today() - timedelta(days=3)).isoformat()

        call_command("purge_history", "--before", before, "--dry-run", stdout=out)
        assert "Dry run: 1 history records" in out.getvalue()
        assert LLMUsageHistory.objects.count() == 1

        call_command("purge_history", "--before", before, "--batch-size", "1", stdout=out)
        assert "Deleted 1 history records" in out.getvalue()
        assert not LLMUsageHistory.objects.exists()


def test_beat_runs_backup_and_purge_nightly_at_the_backup_hour():
    schedule = settings.CELERY_BEAT_SCHEDULE
    backup, purge = schedule["backup_accounted_llmusage"], schedule["purge_history"]

    assert backup["task"] == tasks.backup_accounted_llmusage.name
    assert purge["task"] == tasks.purge_history.name
    assert backup["schedule"] == crontab(hour=settings.LLMLOG_BACKUP_HOUR, minute=0)
    assert purge["schedule"].hour == {settings.LLMLOG_BACKUP_HOUR}
    assert settings.CELERY_TIMEZONE == settings.TIME_ZONE
    for task in (tasks.backup_accounted_llmusage, tasks.purge_history):
        assert task.acks_late and task.expires and task.time_limit and task.soft_time_limit


def test_the_nightly_tasks_run_through_a_real_worker(celery_worker_process):
    moved = {usage(days_ago=1).pk, usage(days_ago=2, status="skipped").pk}
    pending = usage(days_ago=1, status="pending")

    counts = tasks.backup_accounted_llmusage.delay().get(timeout=60)

    assert counts["moved"] == 2 and counts["pending_left"] == 1
    assert ids(LLMUsageHistory) == moved
    assert ids(LLMUsage) == {pending.pk}
    assert JobRun.objects.get(job=BACKUP_JOB).status == "succeeded"

    purged = tasks.purge_history.delay(before=(today() - timedelta(days=1)).isoformat()).get(timeout=60)

    assert purged["purged"] == 1
    assert LLMUsageHistory.objects.count() == 1


@pytest.mark.django_db
def test_admin_lists_and_searches_job_runs(admin_client):
    usage(days_ago=1)
    backup_accounted_llmusage()
    purge_history(before=today() - timedelta(days=400))  # another job's run, which the search leaves out
    backup = JobRun.objects.get(job=BACKUP_JOB)

    page = admin_client.get("/admin/llmlog/jobrun/")
    found = admin_client.get("/admin/llmlog/jobrun/", {"q": BACKUP_JOB})

    assert page.status_code == 200 and found.status_code == 200
    assert b"moved 1" in page.content
    assert JobRun.objects.filter(job=PURGE_JOB).exists()
    # The admin echoes `q` into the search box: what shows the search worked is the row it found.
    assert [run.pk for run in found.context["cl"].result_list] == [backup.pk]
    assert f'href="/admin/llmlog/jobrun/{backup.pk}/change/'.encode() in found.content
