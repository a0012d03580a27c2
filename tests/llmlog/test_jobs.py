import pytest

from llmlog.jobs import job_run
from llmlog.models import JobRun

pytestmark = pytest.mark.django_db


def test_job_run_records_counts_and_duration():
    with job_run("backup") as run:
        run.counts["moved"] = 5

    saved = JobRun.objects.get()
    assert (saved.job, saved.status, saved.counts) == ("backup", "succeeded", {"moved": 5})
    assert saved.duration_seconds >= 0


def test_job_run_records_the_error_and_reraises():
    with pytest.raises(RuntimeError), job_run("backup"):
        raise RuntimeError("disk full")

    saved = JobRun.objects.get()
    assert saved.status == "failed"
    assert saved.error == "RuntimeError: disk full"
