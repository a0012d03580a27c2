"""Job runs: every periodic job records when it ran, how long, what it did, and how it failed."""

import logging
from collections.abc import Iterator
from contextlib import contextmanager

from django.utils import timezone

from llmlog.models import JobRun

logger = logging.getLogger(__name__)


@contextmanager
def job_run(job: str) -> Iterator[JobRun]:
    """Record one run of `job`. Put what it did into `run.counts`; an exception marks it failed."""
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
