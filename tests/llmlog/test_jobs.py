import time
from datetime import timedelta

import pytest
from django.utils import timezone

from llmlog.jobs import job_run
from llmlog.models import JobRun

pytestmark = pytest.mark.django_db


def test_job_run_records_counts_and_duration():
    before = timezone.now()
    with job_run("backup") as run:
        run.counts["moved"] = 5
        time.sleep(0.05)
    after = timezone.now()

    saved = JobRun.objects.get()
    assert (saved.job, saved.status, saved.counts) == ("backup", "succeeded", {"moved": 5})
    assert before <= saved.started_at < saved.finished_at <= after
    assert 0.05 <= saved.duration_seconds <= (after - before).total_seconds()


def test_job_run_records_the_error_and_reraises():
    with pytest.raises(RuntimeError), job_run("backup"):
        raise RuntimeError("disk full")

    saved = JobRun.objects.get()
    assert saved.status == "failed"
    assert saved.error == "RuntimeError: disk full"


def test_a_run_whose_process_died_is_marked_failed_by_the_next_run():
    dead = JobRun.objects.create(job="backup", started_at=timezone.now() - timedelta(hours=7))

    with job_run("backup"):
        pass

    dead.refresh_from_db()
    assert dead.status == "failed"
    assert "Abandoned" in dead.error


def test_old_runs_beyond_the_limit_are_dropped(monkeypatch):
    monkeypatch.setattr("llmlog.jobs.KEEP_RUNS", 3)
    start = timezone.now() - timedelta(hours=1)
    for minutes in range(5):
        JobRun.objects.create(
            job="rollups", started_at=start + timedelta(minutes=minutes), status="succeeded"
        )
    JobRun.objects.create(job="other", started_at=start - timedelta(days=1), status="succeeded")

    with job_run("rollups"):
        pass

    assert JobRun.objects.filter(job="rollups").count() == 4  # the 3 newest before this run, and this run
    assert JobRun.objects.filter(job="other").exists()
