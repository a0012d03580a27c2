"""The backup under crashes and contention, on PostgreSQL: every record ends in exactly one table."""

import os
import signal
import subprocess
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from llmlog.backup import BACKUP_JOB, backup_accounted_llmusage
from llmlog.demo import load_demo_data
from llmlog.models import JobRun, LLMUsage, LLMUsageHistory
from tests.llmlog.test_backup import ids, rows

pytestmark = pytest.mark.django_db(transaction=True)

ROOT = Path(__file__).resolve().parent.parent.parent


def past_days_of_usage(n: int) -> set:
    """`n` demo records of past days, all accounted but every 7th pending and every 11th failed.
    Returns the ids that must stay in llmusage."""
    load_demo_data(rows=n, days=20)
    LLMUsage.objects.update(accounting_status="accounted")
    LLMUsage.objects.filter(use_date__gte=timezone.localdate()).update(
        use_date=timezone.localdate() - timedelta(days=1)
    )
    all_ids = sorted(ids(LLMUsage))
    pending, failed = set(all_ids[::7]), set(all_ids[3::11]) - set(all_ids[::7])
    LLMUsage.objects.filter(pk__in=pending).update(accounting_status="pending")
    LLMUsage.objects.filter(pk__in=failed).update(accounting_status="failed")
    return pending | failed


def command_process(*args: str) -> subprocess.Popen:
    """The management command in its own process, on the test database (as the worker fixture does)."""
    db = settings.DATABASES["default"]
    if connection.vendor == "postgresql":
        url = f"postgres://{db['USER']}:{db['PASSWORD'] or ''}@{db['HOST']}:{db['PORT'] or 5432}/{db['NAME']}"
    else:
        url = f"sqlite:///{db['NAME']}"
    env = dict(os.environ, DJANGO_SETTINGS_MODULE="tests.settings", DATABASE_URL=url)
    return subprocess.Popen(
        [sys.executable, "manage.py", "backup_accounted_llmusage", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_a_run_killed_mid_way_loses_nothing_doubles_nothing_and_a_rerun_finishes():
    staying = past_days_of_usage(12_000)
    before = rows(LLMUsage)
    movable = set(before) - staying

    process = command_process("--batch-size", "20")
    deadline = time.monotonic() + 120
    while LLMUsageHistory.objects.count() < 1_500:
        assert process.poll() is None, f"the run ended before it could be killed:\n{process.stdout.read()}"
        assert time.monotonic() < deadline, "the run moved nothing in 2 minutes"
        time.sleep(0.02)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()

    moved_before_kill = ids(LLMUsageHistory)
    assert 1_500 <= len(moved_before_kill) < len(movable), "killed mid-way"
    assert not moved_before_kill & ids(LLMUsage), "a record is in both tables"
    assert rows(LLMUsage) | rows(LLMUsageHistory) == before
    assert JobRun.objects.get(job=BACKUP_JOB).status == "running"  # the killed run never finished

    counts = backup_accounted_llmusage(batch_size=1_000)

    assert counts["moved"] == len(movable) - len(moved_before_kill)
    assert ids(LLMUsageHistory) == movable
    assert ids(LLMUsage) == staying
    assert rows(LLMUsage) | rows(LLMUsageHistory) == before


def test_two_processes_started_together_give_the_result_of_one_run():
    staying = past_days_of_usage(10_000)
    before = rows(LLMUsage)

    processes = [command_process("--batch-size", "50") for _ in range(2)]
    outputs = [process.communicate(timeout=180)[0] for process in processes]

    assert [process.returncode for process in processes] == [0, 0], outputs
    runs = list(JobRun.objects.filter(job=BACKUP_JOB))
    assert len(runs) == 2
    assert max(run.started_at for run in runs) < min(run.finished_at for run in runs), (
        "the runs did not overlap: one finished before the other started, so nothing raced"
    )
    assert sum(run.counts["moved"] for run in runs) == len(before) - len(staying)
    assert ids(LLMUsage) == staying
    assert ids(LLMUsageHistory) == set(before) - staying
    assert rows(LLMUsage) | rows(LLMUsageHistory) == before


@pytest.mark.postgres
def test_a_record_locked_by_another_session_is_waited_for_and_moved():
    """The first pass skips rows another session holds; the last pass waits for them."""
    past_days_of_usage(500)
    held = LLMUsage.objects.filter(accounting_status="accounted").order_by("pk").first()
    locked, release = threading.Event(), threading.Event()

    def hold_the_row() -> None:
        try:
            with transaction.atomic():
                LLMUsage.objects.select_for_update().get(pk=held.pk)
                locked.set()
                release.wait(timeout=30)
        finally:
            connection.close()

    holder = threading.Thread(target=hold_the_row)
    holder.start()
    assert locked.wait(timeout=10)
    threading.Timer(1.0, release.set).start()

    started = time.monotonic()
    backup_accounted_llmusage(batch_size=100)
    holder.join(timeout=30)

    assert time.monotonic() - started >= 0.9, "the run did not wait for the held row"
    assert LLMUsageHistory.objects.filter(pk=held.pk).exists()
    assert not LLMUsage.objects.filter(accounting_status="accounted").exists()
