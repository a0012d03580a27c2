"""`make run` itself (scripts/run.sh: migrate, demo data, gunicorn + a Celery worker with beat) on a fresh
database of its own: restarted, it serves with the same key; Ctrl-C stops it; its logs are JSON lines and
the worker's log is kept across restarts; and every example of the README ends `accounted` under it."""

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from django.db import connection

from tests.servers import free_port, url_of_the_test_database

ROOT = Path(__file__).resolve().parent.parent
KEY_LINE = re.compile(r"API key \(platform, ingest \+ read\): (llk_\S+)")
START_SECONDS = 180


@dataclass
class RunningApp:
    url: str
    key: str
    output: Path
    var: Path

    def get(self, path: str, *, key: str | None = None) -> tuple[int, dict]:
        request = urllib.request.Request(
            self.url + path, headers={"Authorization": f"Bearer {key or self.key}"}
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"{}")


@pytest.fixture
def fresh_database(tmp_path) -> Iterator[str]:
    """An empty database of the kind the tests run on, for make run alone; dropped after."""
    if connection.vendor != "postgresql":
        yield f"sqlite:///{tmp_path / 'make-run.sqlite3'}"
        return
    name = f"llmlog_make_run_{uuid.uuid4().hex[:8]}"
    base = url_of_the_test_database().rsplit("/", 1)[0]
    with psycopg.connect(f"{base}/postgres", autocommit=True) as admin:  # CREATE DATABASE: no transaction
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(f"{base}/postgres", autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def make_run(var: Path, database_url: str, *, reset: bool = False) -> Iterator[RunningApp]:
    """scripts/run.sh as `make run` starts it (after its pip install), on a free port; stopped with
    Ctrl-C (SIGINT to its process group, as a terminal sends it)."""
    port = free_port()
    env = dict(os.environ, BIND=f"127.0.0.1:{port}", DEMO_ROWS="20", LLMLOG_VAR_DIR=str(var))
    env.update(DATABASE_URL=database_url, RESET="1" if reset else "", WEB_WORKERS="2")
    env.pop("DJANGO_SETTINGS_MODULE", None)  # config.settings, as make run has it
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    var.mkdir(parents=True, exist_ok=True)
    output = var.parent / f"make-run-{time.monotonic_ns()}.out"
    with output.open("w") as sink:
        process = subprocess.Popen(
            [str(ROOT / "scripts/run.sh")],
            cwd=ROOT,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + START_SECONDS
        while True:
            assert process.poll() is None, f"make run stopped:\n{output.read_text()[-4000:]}"
            assert time.monotonic() < deadline, f"make run did not serve:\n{output.read_text()[-4000:]}"
            try:
                with urllib.request.urlopen(url + "/healthz", timeout=5) as response:
                    if response.status == 200:
                        break
            except (OSError, urllib.error.HTTPError):
                pass
            time.sleep(0.5)
        match = KEY_LINE.search(output.read_text())
        assert match, output.read_text()
        yield RunningApp(url=url, key=match.group(1), output=output, var=var)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGINT)  # Ctrl-C
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
                tail = output.read_text()[-3000:]
                raise AssertionError(f"Ctrl-C did not stop make run within 30 s:\n{tail}") from None


def stop_left_nothing_running(app: RunningApp) -> None:
    try:
        urllib.request.urlopen(app.url + "/healthz", timeout=2)
    except OSError:
        return
    raise AssertionError("still serving after Ctrl-C")


def test_make_run_restarted_serves_with_the_same_key(tmp_path, fresh_database) -> None:
    var = tmp_path / "var"
    with make_run(var, fresh_database) as first:
        assert first.get("/api/llmusage/?page_size=1")[0] == 200
    stop_left_nothing_running(first)
    with make_run(var, fresh_database) as second:
        assert second.key == first.key
        assert second.get("/api/llmusage/?page_size=1")[0] == 200
    with make_run(var, fresh_database, reset=True) as fresh:
        assert fresh.key != first.key
        assert fresh.get("/api/llmusage/?page_size=1", key=first.key)[0] == 401
        assert fresh.get("/api/llmusage/?page_size=1")[0] == 200

    # The worker's log is appended to across the three runs, not emptied at each start.
    worker_log = (var / "celery.log").read_text().splitlines()
    assert sum('"message": "worker starting"' in line for line in worker_log) == 3
    # Logs are JSON lines: every line of the terminal that is not make run's own banner parses.
    banner = ("llmlog is starting", "  ", "Loaded ", "Celery worker + beat running")
    for line in first.output.read_text().splitlines():
        if line.strip() and not line.startswith(banner):
            assert json.loads(line)["level"], line


# --- the README's examples -----------------------------------------------------------------------

README = ROOT / "README.md"
BLOCK = re.compile(r"```(\w+)\n(.*?)```", re.S)
README_URL = "http://127.0.0.1:8000"


def readme_examples() -> dict[str, str]:
    """Each example of the README as a bash script, as a reader would run it after `KEY=<the key>`."""
    text = README.read_text()
    blocks = [(match.start(), match.group(1), match.group(2)) for match in BLOCK.finditer(text)]

    def block(language: str, *, containing: str = "", after: str = "") -> str:
        start = text.index(after) if after else 0
        found = [body for at, lang, body in blocks if at > start and lang == language and containing in body]
        assert found, f"README has no {language} block {containing!r} after {after!r}: it drifted"
        return found[0]

    def python(code: str) -> str:
        return f"{Path(sys.executable)} - <<'PYTHON'\n{code}PYTHON\n"

    try_it = block("sh", containing="/api/llmusage/", after="## Try it")
    return {
        "try it": "\n".join(line for line in try_it.splitlines() if not line.startswith("KEY=")),
        "litellm": python(block("python", containing="GenericAPILogger")),
        "otel": block("sh", containing="OTEL_EXPORTER_OTLP_ENDPOINT")
        + python(block("python", containing="OTLP")),
        "plain post": block("sh", containing="/api/llmusage/", after="**A plain HTTP POST.**"),
    }


def test_every_readme_example_ends_accounted_under_make_run(tmp_path, fresh_database) -> None:
    examples = readme_examples()
    with make_run(tmp_path / "var", fresh_database) as app:
        env = dict(os.environ, KEY=app.key, LITELLM_LOCAL_MODEL_COST_MAP="True")
        env.pop("DJANGO_SETTINGS_MODULE", None)
        for name, script in examples.items():
            done = subprocess.run(
                ["bash", "-euo", "pipefail", "-c", script.replace(README_URL, app.url)],
                env=env,
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert done.returncode == 0, f"{name}: {done.stdout}\n{done.stderr}"

        deadline = time.monotonic() + 60
        while True:
            status, body = app.get("/api/llmusage/?page_size=100")
            assert status == 200, body
            records = [r for r in body["results"] if not r["transno"].startswith("demo-")]
            states = {r["transno"]: (r["userorgid"], r["ownerid"], r["accounting_status"]) for r in records}
            if len(records) == 5 and all(r["accounting_status"] == "accounted" for r in records):
                break
            assert time.monotonic() < deadline, f"not all accounted within a minute: {states}"
            time.sleep(2)

    assert {"req-1", "gw-1001", "gw-1002"} <= set(states)
    assert {org for org, _owner, _status in states.values()} == {"org-01", "org-02"}
    assert {owner for _org, owner, _status in states.values()} == {"openai", "anthropic"}
