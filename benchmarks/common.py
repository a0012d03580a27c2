"""What every benchmark shares: Django set-up on the benchmark database, timing, and the report table.

Each figure is measured at least 3 times (a fast one as the mean of a batch of calls: `measure`); the
table shows the median with min and max, beside the raw-SQL ceiling of the same operation measured in
the same run, and their ratio.
"""

import http.client
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/llmlog_bench"


def setup_django(*, migrate: bool = True) -> None:
    """Point Django at the benchmark database (BENCH_DATABASE_URL, created when missing) and set it up;
    migrate=False in a helper process whose parent has migrated (saves a second or two per process)."""
    sys.path.insert(0, str(ROOT))
    url = os.environ.get("BENCH_DATABASE_URL", DEFAULT_DATABASE_URL)
    os.environ["DATABASE_URL"] = url
    os.environ.setdefault("DJANGO_SECRET_KEY", "benchmark-only")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    _create_database(url)
    import django

    django.setup()
    if not migrate:
        return
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def _create_database(url: str) -> None:
    import psycopg

    name = url.rsplit("/", 1)[-1].split("?")[0]
    admin_url = url.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
            conn.execute(f'CREATE DATABASE "{name}"')


def timed(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


# A measurement of a fast operation is the mean of a batch of calls lasting about this long.
BATCH_SECONDS = 0.05
MAX_BATCH = 200


def measure(
    repeat: int, app: Callable[[], object] | None, ceiling: Callable[[], object] | None
) -> tuple[list[float], list[float]]:
    """(app ms, ceiling ms): each side measured `repeat` times, alternating, so that a busy moment of
    the machine hits both alike. A call under BATCH_SECONDS is timed in a batch (the same number of
    calls on both sides, as many as fill BATCH_SECONDS on the slower) and divided: a sub-millisecond
    call timed alone measures the machine's jitter as much as the call."""
    sides = [fn for fn in (app, ceiling) if fn is not None]
    slowest = max(min(timed(fn) for _ in range(3)) for fn in sides)  # also warms connections and plans
    batch = max(1, min(MAX_BATCH, int(BATCH_SECONDS / slowest)))
    times: dict[int, list[float]] = {id(fn): [] for fn in sides}
    for _ in range(repeat):
        for fn in sides:
            started = time.perf_counter()
            for _ in range(batch):
                fn()
            times[id(fn)].append((time.perf_counter() - started) / batch * 1000)
    return (times[id(app)] if app else []), (times[id(ceiling)] if ceiling else [])


@dataclass
class Figure:
    """One line of the report: the app's figure beside its raw-SQL ceiling."""

    name: str
    unit: str  # "rows/s" (higher is better) or "ms" (lower is better)
    app: list[float] = field(default_factory=list)
    ceiling: list[float] = field(default_factory=list)
    target: str = ""
    note: str = ""

    @property
    def ratio(self) -> float | None:
        """app / ceiling: for rows/s the share of the ceiling reached, for ms how many times slower."""
        if not self.app or not self.ceiling or not statistics.median(self.ceiling):
            return None
        return statistics.median(self.app) / statistics.median(self.ceiling)

    def row(self) -> list[str]:
        def spread(values: list[float]) -> str:
            if not values:
                return "-"
            return f"{statistics.median(values):,.2f} ({min(values):,.2f}–{max(values):,.2f})"

        ratio = self.ratio
        return [
            self.name,
            f"{spread(self.app)} {self.unit}",
            f"{spread(self.ceiling)} {self.unit}" if self.ceiling else "-",
            f"{ratio:.2f}" if ratio is not None else "-",
            self.target,
            self.note,
        ]


HEADER = ["figure", "llmlog: median (min–max)", "raw SQL ceiling", "ratio", "target", "note"]


def markdown_table(figures: list[Figure]) -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(figure.row()) + " |" for figure in figures]
    return "\n".join(lines)


# --- the app under gunicorn, and clients over keep-alive connections -------------------------------

BENCH_REDIS_URL = "redis://127.0.0.1:6379/13"


def start_app_server(
    *, port: int, workers: int | None = None, threads: int | None = None, worker_class: str | None = None
) -> "subprocess.Popen":
    """gunicorn on the benchmark database with the production stack around it (Redis for the cache,
    the throttle and the broker: BENCH_REDIS_URL), with production's worker model from
    config/gunicorn.py (workers, worker class, threads) unless the caller names its own, as a benchmark
    comparing worker models does. Stop it with `stop_app_server`."""
    env = dict(
        os.environ,
        DJANGO_SECRET_KEY="benchmark-only",
        # Not a dev server's, nor another benchmark's running beside this one (gunicorn empties it).
        PROMETHEUS_MULTIPROC_DIR=str(ROOT / "var" / f"bench-prometheus-{port}"),
        DJANGO_DEBUG="false",
        LOG_LEVEL="WARNING",
        DJANGO_ALLOWED_HOSTS="127.0.0.1",
        REDIS_URL=os.environ.get("BENCH_REDIS_URL", BENCH_REDIS_URL),
        LLMLOG_INGEST_RATE="100000000/min",  # the per-key throttle still counts (and costs), never refuses
    )
    command = [
        str(ROOT / ".venv/bin/gunicorn"),
        "config.wsgi",
        f"--bind=127.0.0.1:{port}",
        *([f"--workers={workers}"] if workers else []),
        *([f"--worker-class={worker_class}"] if worker_class else []),
        *([f"--threads={threads}"] if threads else []),
        "--keep-alive=30",
        "--timeout=120",
        "--log-level=warning",
        # Production's settings (scripts/run.sh): per-worker metrics files, gc.freeze once the app is
        # loaded. Each worker loads the app as it starts, as in production (no --preload).
        "--config=config/gunicorn.py",
    ]
    server = subprocess.Popen(command, cwd=ROOT, env=env)
    for _ in range(200):
        try:
            http.client.HTTPConnection("127.0.0.1", port, timeout=1).request("GET", "/admin/login/")
            return server
        except OSError:
            time.sleep(0.1)
    server.kill()
    raise RuntimeError("gunicorn did not start")


def stop_app_server(server: "subprocess.Popen") -> None:
    server.terminate()
    try:
        server.wait(timeout=30)
    except subprocess.TimeoutExpired:
        server.kill()


def post_bodies(
    *,
    port: int,
    path: str,
    bodies: list[bytes],
    key: str,
    clients: int,
    content_type: str = "application/json",
    refused: Callable[[int, bytes], bool] = lambda status, payload: status not in (200, 201),
) -> tuple[float, list[float]]:
    """POST every body over `clients` persistent connections: (seconds elapsed, latencies in ms).
    Any refused answer stops the run: a figure counts only records that were stored."""
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    headers = {"Authorization": f"Bearer {key}", "Content-Type": content_type}

    def client(share: list[bytes]) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        mine = []
        for body in share:
            started = time.perf_counter()
            conn.request("POST", path, body=body, headers=headers)
            response = conn.getresponse()
            payload = response.read()
            mine.append((time.perf_counter() - started) * 1000)
            if refused(response.status, payload):
                errors.append(f"{path} {response.status}: {payload[:300]!r}")
        conn.close()
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=client, args=(bodies[i::clients],)) for i in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    if errors:
        raise RuntimeError(f"{len(errors)} requests failed, e.g. {errors[0]}")
    return elapsed, latencies


def fill_usage(*, rows: int, leftovers: tuple[str, ...] = (), vacuum: bool = True) -> bool:
    """At least `rows` records in llmusage (demo data), without the records earlier runs left behind
    (transno prefixes in `leftovers`), analyzed as autovacuum would have. Returns whether the table
    changed; an unchanged table is not vacuumed again, nor is any with vacuum=False (the caller changes
    it further and vacuums once)."""
    from django.db import connection

    from llmlog.demo import load_demo_data
    from llmlog.models import LLMUsage

    deleted = 0
    with connection.cursor() as cursor:  # before counting: leftovers are not part of the `rows`
        for prefix in leftovers:
            cursor.execute("DELETE FROM llmusage WHERE transno LIKE %s", [prefix + "%"])
            deleted += cursor.rowcount
    existing = LLMUsage.objects.count()
    if existing < rows:
        print(f"loading {rows - existing:,} demo rows ...", flush=True)
        load_demo_data(rows=rows - existing)
    changed = bool(deleted) or existing < rows
    if changed and vacuum:
        with connection.cursor() as cursor:
            cursor.execute("VACUUM ANALYZE llmusage")
    return changed


def raw_connection():
    """A plain psycopg connection to the benchmark database, for the raw-SQL ceilings."""
    import psycopg
    from django.conf import settings

    db = settings.DATABASES["default"]
    return psycopg.connect(
        host=db["HOST"], port=db["PORT"] or 5432, user=db["USER"], password=db["PASSWORD"], dbname=db["NAME"]
    )


def wsgi_client(key: str) -> Callable[..., tuple[int, bytes]]:
    """GET through Django's WSGI application, called as gunicorn calls it: every middleware, URL
    routing, authentication, DRF and rendering, without an HTTP server's parsing. django.test.Client
    adds its own work to each request (template-render signals, a request factory), which production
    never pays. Returns get(path, params) -> (status, body)."""
    import io
    from urllib.parse import urlencode

    from django.core.handlers.wsgi import WSGIHandler

    application = WSGIHandler()

    def get(path: str, params: dict | None = None) -> tuple[int, bytes]:
        environ = {
            "REQUEST_METHOD": "GET",
            "PATH_INFO": path,
            "QUERY_STRING": urlencode(params or {}),
            "SERVER_NAME": "127.0.0.1",
            "SERVER_PORT": "80",
            "SERVER_PROTOCOL": "HTTP/1.1",
            "HTTP_HOST": "127.0.0.1",
            "REMOTE_ADDR": "127.0.0.1",
            "HTTP_AUTHORIZATION": f"Bearer {key}",
            "wsgi.input": io.BytesIO(b""),
            "wsgi.url_scheme": "http",
            "wsgi.errors": sys.stderr,
        }
        status: list[str] = []
        body = b"".join(application(environ, lambda line, headers: status.append(line)))
        return int(status[0].split()[0]), body

    return get
