"""Where a benchmark's requests run: the app under gunicorn and its clients on threads over keep-alive
connections, the app through Django's WSGI application in this process, and a measurement in a child
process of its own, with its memory.
"""

import http.client
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from benchmarks.startup import ROOT

# --- the app under gunicorn, and clients over keep-alive connections -------------------------------

BENCH_REDIS_URL = "redis://127.0.0.1:6379/13"


def free_port() -> int:
    """A loopback port nothing listens on: benchmarks run beside each other and beside tests."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


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
            # Answered, not only connected: the socket accepts before any worker has loaded the app.
            probe = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            probe.request("GET", "/admin/login/")
            probe.getresponse().read()
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


# --- the app in this process, through its WSGI application ---------------------------------------


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
