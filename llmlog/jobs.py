"""Job runs: every periodic job records when it ran, how long, what it did, and how it failed."""

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

from django.utils import timezone

from llmlog.models import JobRun

logger = logging.getLogger(__name__)

# Runs kept per job: a month of the 5-minute rollup job, years of the nightly ones.
KEEP_RUNS = 10_000
# A run still "running" after this long died with its process (kill -9, OOM): no task may run longer.
ABANDONED_AFTER = timedelta(hours=6)


@contextmanager
def job_run(job: str) -> Iterator[JobRun]:
    """Record one run of `job`. Put what it did into `run.counts`; an exception marks it failed."""
    _tidy(job)
    run = JobRun.objects.create(job=job)
    try:
        yield run
    except BaseException as exc:
        run.status = JobRun.Status.FAILED
        run.error = f"{type(exc).__name__}: {exc}"
        raise
    else:
        run.status = JobRun.Status.SUCCEEDED
    finally:
        run.finished_at = timezone.now()
        run.save(update_fields=["status", "error", "counts", "finished_at"])
        logger.info("job %s %s in %.1fs: %s", job, run.status, run.duration_seconds, run.counts)


def _tidy(job: str) -> None:
    """Close the runs of `job` whose process died, and drop the oldest beyond KEEP_RUNS."""
    now = timezone.now()
    JobRun.objects.filter(job=job, status=JobRun.Status.RUNNING, started_at__lt=now - ABANDONED_AFTER).update(
        status=JobRun.Status.FAILED, finished_at=now, error="Abandoned: its process stopped before finishing."
    )
    newest_first = JobRun.objects.filter(job=job).order_by("-started_at").values_list("started_at", flat=True)
    first_dropped = next(iter(newest_first[KEEP_RUNS : KEEP_RUNS + 1]), None)
    if first_dropped is not None:
        JobRun.objects.filter(job=job, started_at__lte=first_dropped).delete()
