"""A private ClickHouse server for the tests and the benchmark: Debian's `clickhouse-server` (installed by
`make clickhouse`), started on free ports from a copy of its packaged config whose data, log and tmp
paths point under a folder of our own, and stopped after. Nothing of the system's server is touched."""

import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

SERVER = Path("/usr/sbin/clickhouse-server")
PACKAGED_CONFIG = Path("/etc/clickhouse-server")
# The server answers its first query within a second or two; a slow machine under the suite's load
# may take longer.
START_TIMEOUT_SECONDS = 60


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _config(base: Path, *, tcp_port: int) -> Path:
    """Write config.xml and users.xml under `base`: the packaged ones with our paths and ports."""
    text = (PACKAGED_CONFIG / "config.xml").read_text()
    replacements = {
        "log": f"{base}/log/server.log",
        "errorlog": f"{base}/log/server.err.log",
        "http_port": str(free_port()),
        "tcp_port": str(tcp_port),
        "interserver_http_port": str(free_port()),
        "tmp_path": f"{base}/data/tmp/",
        "user_files_path": f"{base}/data/user_files/",
        "format_schema_path": f"{base}/data/format_schemas/",
    }
    for tag, value in replacements.items():
        text = re.sub(rf"<{tag}>[^<]*</{tag}>", f"<{tag}>{value}</{tag}>", text, count=1)
    # The data path (the first <path>: the distributed DDL queue's <path> comes later) and IPv4 only.
    text = re.sub(r"<path>/var/lib/clickhouse/</path>", f"<path>{base}/data/</path>", text, count=1)
    text = text.replace("<listen_host>::1</listen_host>", "")
    (base / "log").mkdir(parents=True, exist_ok=True)
    (base / "config.xml").write_text(text)
    shutil.copy(PACKAGED_CONFIG / "users.xml", base / "users.xml")
    return base / "config.xml"


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


@contextmanager
def clickhouse_server(base: Path) -> Iterator[str]:
    """Run a ClickHouse server with its config and data under `base` (emptied first); yields its URL
    (clickhouse://default@127.0.0.1:<tcp port>/default). Stopped, and waited for, on exit."""
    if not SERVER.exists():
        raise RuntimeError(f"{SERVER} is missing: `make clickhouse` installs Debian's clickhouse-server")
    shutil.rmtree(base, ignore_errors=True)
    base.mkdir(parents=True)
    port = free_port()
    config = _config(base, tcp_port=port)
    with open(base / "log" / "stdout.log", "wb") as output:
        server = subprocess.Popen(
            [str(SERVER), f"--config-file={config}"], cwd=base, stdout=output, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while not _answers(port):
            if server.poll() is not None or time.monotonic() > deadline:
                log = (base / "log" / "server.err.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"clickhouse-server did not start (exit {server.returncode}): {log}")
            time.sleep(0.2)
        yield f"clickhouse://default@127.0.0.1:{port}/default"
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
