"""gunicorn settings (`gunicorn -c config/gunicorn.py`: scripts/run.sh, deploy/ and the benchmarks).

Worker model: gthread, WEB_WORKERS processes (default 2, one per core) of WEB_THREADS threads (default
8). The load is 1 ms ingests beside reads of 100 ms and more, nearly all of which is PostgreSQL working
while the thread waits on its socket with the GIL released. A sync worker holds its process for the whole
read, so two slow reads stop all ingest (the mixed load measured 1.3 s p99 per single record); threads
let the ingests of a process run while its reads wait, and keep-alive connections wait in the main loop
without holding a thread. Not gevent: psycopg 3 under Django blocks in C, unseen by gevent's hub, unless
the database calls are made green too; not ASGI: DRF's views are synchronous. Each thread keeps its own
database connection (Django's are per thread; CONN_MAX_AGE in settings), so the server holds up to
WEB_WORKERS x WEB_THREADS of them: 16 by default, well inside PostgreSQL's default 100. Measured on 2
cores (BENCHMARKS.md, "load, worker model"): while reads took seconds, sync 44 req/s, gthread x4 49, x8 68,
x16 73; with reads from the rollups all four are level (212-236 req/s, "load: connections over the
workers"). Past 8 the CPU is the limit, not waiting, and each thread more is one connection more.

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


def _env_count(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip() or str(default)
    if not raw.isdigit() or int(raw) < 1:
        raise SystemExit(f"{name} must be a whole number of at least 1, got {raw!r}")
    return int(raw)


worker_class = "gthread"
workers = _env_count("WEB_WORKERS", 2)
threads = _env_count("WEB_THREADS", 8)
# Requests one keep-alive connection may carry before it is closed (nginx's keepalive_requests);
# see pre_request.
_keepalive_requests = _env_count("WEB_KEEPALIVE_REQUESTS", 20)

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
    # Imported now, before any worker exists: child_exit runs inside gunicorn's SIGCHLD handler, and a
    # worker ending while another one's handler was still importing prometheus_client found the module
    # half made ("cannot import name 'Gauge'"), leaving that worker's files unmarked.
    import prometheus_client.multiprocess  # noqa: F401


def child_exit(server, worker) -> None:
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def post_worker_init(worker) -> None:
    gc.freeze()


def pre_request(worker, req) -> None:
    # The kernel gives a new connection to whichever worker accepts it first, and a keep-alive
    # connection then stays with that worker: a gateway's pool of connections opened together (or
    # while the other workers were still loading the app) can all land on one process, whose GIL
    # then serves the whole load while the other cores idle. Closing a connection after
    # WEB_KEEPALIVE_REQUESTS requests ("Connection: close", which every HTTP client follows by opening a
    # new one) lets the connections spread again, each reconnect most likely won by the least busy
    # worker, whose main loop is free to accept.
    worker.log.debug("%s %s", req.method, req.path)  # what gunicorn's own pre_request does
    if req.req_number % _keepalive_requests == 0:
        req.must_close = True
