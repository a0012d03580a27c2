"""gunicorn settings (`gunicorn -c config/gunicorn.py`, as scripts/run.sh starts it).

Metrics: each gunicorn worker is a process with its own counters, and a scrape reaches one of them.
prometheus_client's multiprocess mode keeps every worker's values in files under PROMETHEUS_MULTIPROC_DIR
and /metrics adds them up (llmlog.metrics). The variable is set here, in the master, so the workers it
forks have it before they import prometheus_client; the directory is emptied at start (files of a past
run would be added in) and a dead worker's files are marked so its live gauges drop out.

Garbage collection: once a worker has loaded the app, its objects (Django, DRF, the URL conf: hundreds of
thousands) are frozen out of the collector's reach, so a full collection no longer walks them all in
the middle of a request (a pause of tens of milliseconds, seen in the tail latency).

Access log: gunicorn's own is off; llmlog.logging writes one JSON line per request with its request id,
and without the query string (new-api's /api/log/token?key= carries a gateway key there).
"""

import gc
import os
import shutil
from pathlib import Path

_var = Path(os.environ.get("LLMLOG_VAR_DIR") or Path(__file__).resolve().parent.parent / "var")
os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", str(_var / "prometheus"))
# Made here too, not only in on_starting: `gunicorn --check-config` (deploy/, tests/test_deploy.py) loads the
# app without starting, and prometheus_client needs the directory to exist.
Path(os.environ["PROMETHEUS_MULTIPROC_DIR"]).mkdir(parents=True, exist_ok=True)

accesslog = None
# gunicorn's own lines (starting, booting a worker, a worker timeout) as JSON lines too, like the app's
# (llmlog.logging): one format on the terminal of `make run` and in the journal.
logconfig_dict = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"json": {"()": "llmlog.logging.JsonFormatter"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "json"}},
    "root": {"level": "INFO", "handlers": []},
    "loggers": {
        "gunicorn.error": {"level": "INFO", "handlers": ["console"], "propagate": False},
        "gunicorn.access": {"level": "INFO", "handlers": [], "propagate": False},
    },
}


def on_starting(server) -> None:
    directory = Path(os.environ["PROMETHEUS_MULTIPROC_DIR"])
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True, exist_ok=True)


def child_exit(server, worker) -> None:
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def post_worker_init(worker) -> None:
    gc.freeze()
