"""What every benchmark shares: Django set-up on the benchmark database, timing, and the report table;
the app under gunicorn and its clients; the raw connections and rows of the ceilings; a measurement in a
process of its own, and its memory.

Each figure is measured at least 3 times (a fast one as the mean of a batch of calls: `measure`); the
table shows the median with min and max, beside the raw-SQL ceiling of the same operation measured in
the same run, and their ratio.
"""

import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from datetime import datetime
    from typing import Self

    import psycopg

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


def bench_parser(description: str) -> argparse.ArgumentParser:
    """A benchmark's command line, its module docstring as the help."""
    return argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )


def rows_parser(description: str, *, rows_help: str) -> argparse.ArgumentParser:
    """The flags of a benchmark on a table of --rows records, measured --repeat times."""
    parser = bench_parser(description)
    parser.add_argument("--rows", type=int, default=1_000_000, help=rows_help)
    parser.add_argument("--repeat", type=int, default=3)
    return parser


def query_data_parser(description: str, *, repeat: int) -> argparse.ArgumentParser:
    """The flags of the benchmarks that read bench_query's data set (query, dialects, admin, clickhouse):
    its size, the measurements per figure, and a reload even when the data is there."""
    parser = bench_parser(description)
    parser.add_argument("--rows", type=int, default=1_000_000, help="usage records, hot and history")
    parser.add_argument("--repeat", type=int, default=repeat, help="measurements per figure (at least 3)")
    parser.add_argument("--reload", action="store_true", help="reload the data even if it is there")
    return parser


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


class Report:
    """The figures of a benchmark in milliseconds, in the order they are measured: each the app's call
    beside its ceiling's (either may be None), `repeat` times each (`measure`)."""

    def __init__(self, repeat: int) -> None:
        self.repeat = repeat
        self.figures: list[Figure] = []

    def time(
        self,
        name: str,
        app: Callable[[], object] | None,
        ceiling: Callable[[], object] | None,
        target: str = "",
        note: str = "",
    ) -> None:
        app_ms, ceiling_ms = measure(self.repeat, app, ceiling)
        self.figures.append(Figure(name, "ms", app=app_ms, ceiling=ceiling_ms, target=target, note=note))
        print(f"measured: {name}", flush=True)


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


@contextmanager
def app_server(
    *, port: int, workers: int | None = None, threads: int | None = None, worker_class: str | None = None
) -> Iterator["subprocess.Popen"]:
    """`start_app_server` for the block, stopped when it ends, however it ends."""
    server = start_app_server(port=port, workers=workers, threads=threads, worker_class=worker_class)
    try:
        yield server
    finally:
        stop_app_server(server)


def run_threads(threads: list[threading.Thread]) -> float:
    """Start every thread, then wait for them all: the seconds that took."""
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - started


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
    elapsed = run_threads(threads)
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


def ingest_setup(
    *, rows: int, leftovers: tuple[str, ...], key_name: str, scopes: list[str]
) -> tuple[str, "psycopg.Connection"]:
    """The set-up of a benchmark that ingests over HTTP: Django on the benchmark database, llmusage
    filled to `rows` without the records of earlier runs (`fill_usage`), a platform key (the records
    state their money, which only a platform key may) for the app's requests, and a raw connection for
    the ceilings (close it, or use it as a context manager). Returns (key, raw connection)."""
    setup_django()
    from llmlog.keys import api_key_create

    fill_usage(rows=rows, leftovers=leftovers)
    _, key = api_key_create(name=key_name, role="admin", scopes=scopes)
    return key, raw_connection()


def raw_connection():
    """A plain psycopg connection to the benchmark database, for the raw-SQL ceilings."""
    import psycopg
    from django.conf import settings

    db = settings.DATABASES["default"]
    return psycopg.connect(
        host=db["HOST"], port=db["PORT"] or 5432, user=db["USER"], password=db["PASSWORD"], dbname=db["NAME"]
    )


def ceiling_connection(*, prepared: bool = False) -> "psycopg.Connection":
    """An autocommit psycopg connection for the ceiling of a read: unprepared, planned at every run, as
    Django sends its queries (psycopg would prepare a statement after 5 runs), or with prepared=True
    prepared from the first run, as llmlog prepares its hottest statements (llmlog.db)."""
    import psycopg

    return psycopg.connect(
        os.environ["DATABASE_URL"], autocommit=True, prepare_threshold=0 if prepared else None
    )


@dataclass
class OrgReads:
    """What a read benchmark on bench_query's data set reads with: an unprepared connection for the
    ceilings, the biggest org (hot and history: a read's worst case for an org) with a reader key of it
    and a platform key, both read-only, the run's `now`, and the report. A benchmark extends it with
    its own clients (fields with init=False, set in __post_init__)."""

    raw: "psycopg.Connection"
    org: str
    org_rows: int
    org_key: str
    platform_key: str
    now: "datetime"
    report: Report

    @classmethod
    def open(cls, repeat: int) -> "Self":
        from django.utils import timezone

        from llmlog.keys import api_key_create

        raw = ceiling_connection()
        org, org_rows = raw.execute(
            "SELECT userorgid, count(*) FROM llmusage_all GROUP BY 1 ORDER BY 2 DESC LIMIT 1"
        ).fetchone()
        _, org_key = api_key_create(userorgid=org, role="reader", scopes=["read"], name="bench")
        _, platform_key = api_key_create(userorgid="", role="admin", scopes=["read"], name="bench")
        return cls(raw, org, org_rows, org_key, platform_key, timezone.now(), Report(repeat))


# --- the raw INSERT of the ingest ceilings ---------------------------------------------------------


def usage_columns_sql() -> str:
    """Every column ingest writes to llmusage, quoted, in its order: a ceiling writes them all."""
    from llmlog.ingest.storage import USAGE_FIELDS

    return ", ".join(f'"{f.column}"' for f in USAGE_FIELDS)


def usage_insert_sql() -> str:
    """One llmusage row of every column, a record already there skipped, as ingest skips it."""
    from llmlog.ingest.storage import USAGE_FIELDS

    placeholders = ", ".join(["%s"] * len(USAGE_FIELDS))
    return (
        f"INSERT INTO llmusage ({usage_columns_sql()}) VALUES ({placeholders}) "
        "ON CONFLICT (transno, userorgid) DO NOTHING"
    )


def usage_values(row: dict) -> tuple:
    """A demo row's values in `usage_columns_sql()`'s order, JSON columns encoded: ready for psycopg."""
    from llmlog.ingest.storage import JSON_COLUMNS, USAGE_FIELDS

    return tuple(
        json.dumps(row[f.attname]) if f.attname in JSON_COLUMNS else row[f.attname] for f in USAGE_FIELDS
    )


# --- a measurement in a process of its own, and its memory ----------------------------------------


def run_json_child(arguments: list[str], *, what: str) -> dict:
    """Run `python <arguments>` from the checkout, a fresh process whose memory is the measurement's
    own, and return the JSON object it prints on its last line."""
    done = subprocess.run([sys.executable, *arguments], cwd=ROOT, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{what} subprocess failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _status_kib(name: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(name + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {name} in /proc/self/status")


def reset_peak_rss() -> int:
    """Reset this process's peak RSS to its current RSS (Linux: clear_refs 5), so the peak measured
    next is the measurement's and not Django's start-up; returns the current RSS in KiB."""
    Path("/proc/self/clear_refs").write_text("5")
    return _status_kib("VmRSS")


def peak_rss() -> int:
    return _status_kib("VmHWM")


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
