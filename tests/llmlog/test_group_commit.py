"""Group commit of single-record ingests (llmlog.ingest.group, PostgreSQL): many requests at once end
up stored once each, answered each by its own outcome, in fewer commits than records; and a worker
killed mid-load has stored every record it acknowledged.

Commits are counted in the rows themselves: every row a transaction inserts carries that
transaction's id (xmin), so the distinct xmins of the records are the commits that wrote them.
"""

import http.client
import json
import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
from django.db import DataError, connection, connections

import llmlog.ingest.service as service
from llmlog.ingest.group import GroupCommitter, GroupFailed
from llmlog.ingest.service import GROUP_COMMIT, usage_ingest
from llmlog.keys import api_key_create
from llmlog.models import LLMUsage
from tests.factories import usage_payload
from tests.servers import gunicorn_server

postgresql_only = pytest.mark.skipif(
    os.environ.get("DATABASE_URL", "").split(":")[0] not in ("postgres", "postgresql"),
    reason="group commit is PostgreSQL's path",
)


def commits_that_wrote(prefix: str) -> int:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(DISTINCT xmin::text) FROM llmusage WHERE transno LIKE %s", [f"{prefix}%"]
        )
        return cursor.fetchone()[0]


def in_threads(count: int, work: Callable[[int], None]) -> None:
    """`work(i)` on `count` threads released together, each on its own database connection."""
    start = threading.Barrier(count)
    failures: list[BaseException] = []

    def run(i: int) -> None:
        try:
            start.wait()
            work(i)
        except BaseException as exc:  # reported by the test, not lost in the thread
            failures.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures, failures


# --- the queue itself --------------------------------------------------------------------------


def test_arrivals_during_a_write_form_the_next_group_and_each_gets_its_own_outcome():
    written: list[list[int]] = []
    first_write_started, release_first_write = threading.Event(), threading.Event()

    def write(items):
        if not written:
            first_write_started.set()
            release_first_write.wait(5)
        written.append(list(items))
        return [item * 10 for item in items]

    group = GroupCommitter(write)
    answers: dict[int, int] = {}
    leader = threading.Thread(target=lambda: answers.__setitem__(0, group.submit(0)))
    leader.start()
    first_write_started.wait(5)
    followers = [
        threading.Thread(target=lambda i=i: answers.__setitem__(i, group.submit(i))) for i in range(1, 6)
    ]
    for thread in followers:
        thread.start()
    while len(group._queue) < 5:  # every follower queued behind the write in flight
        time.sleep(0.001)
    release_first_write.set()
    for thread in [leader, *followers]:
        thread.join(5)

    assert written == [[0], [1, 2, 3, 4, 5]]
    assert answers == {i: i * 10 for i in range(6)}
    assert (group.stats.groups, group.stats.records) == (2, 6)


def test_a_failed_group_write_fails_every_member_and_the_next_group_still_runs():
    calls = []

    def write(items):
        calls.append(list(items))
        if len(calls) == 1:
            raise DataError("bad row")
        return list(items)

    group = GroupCommitter(write, window=0.2, max_size=3)
    outcomes: dict[int, object] = {}

    def submit(i: int) -> None:
        try:
            outcomes[i] = group.submit(i)
        except GroupFailed:
            outcomes[i] = "failed"

    threads = [threading.Thread(target=submit, args=(i,)) for i in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(5)
    assert outcomes == {0: "failed", 1: "failed", 2: "failed"}
    assert group.submit(7) == 7


# --- the service, in threads of this process ------------------------------------------------------


@postgresql_only
@pytest.mark.django_db(transaction=True)
def test_concurrent_single_records_are_stored_once_each_in_fewer_commits_with_their_own_answers():
    threads, per_thread = 8, 25
    sent = {
        (t, i): usage_payload(transno=f"gc-{t}-{i}", output_tokens=300 + i)
        for t in range(threads)
        for i in range(per_thread)
    }
    answers: dict[tuple, str] = {}
    GROUP_COMMIT.reset_stats()

    def work(t: int) -> None:
        for i in range(per_thread):
            payload = sent[(t, i)]
            answers[(t, i)] = usage_ingest(body=json.dumps(payload).encode()).items[0].status
            if i % 5 == 0:  # a resend, a different payload under the same transno, a bad record
                answers[(t, i, "resend")] = usage_ingest(body=json.dumps(payload).encode()).items[0].status
                changed = {**payload, "output_tokens": 1}
                answers[(t, i, "changed")] = usage_ingest(body=json.dumps(changed).encode()).items[0].status
                bad = usage_payload(transno=f"gc-bad-{t}-{i}", input_tokens=-5)
                answers[(t, i, "bad")] = usage_ingest(body=json.dumps(bad).encode()).items[0].status

    in_threads(threads, work)

    expected = {"resend": "duplicate", "changed": "conflict", "bad": "error"}
    wrong = {
        k: status for k, status in answers.items() if status != (expected[k[2]] if len(k) == 3 else "created")
    }
    assert not wrong
    stored = dict(LLMUsage.objects.filter(transno__startswith="gc-").values_list("transno", "output_tokens"))
    assert stored == {f"gc-{t}-{i}": 300 + i for t in range(threads) for i in range(per_thread)}
    stats = GROUP_COMMIT.reset_stats()
    assert stats.records == threads * per_thread + threads * 5 * 2  # the new, the resends, the changed
    assert stats.groups < stats.records
    assert commits_that_wrote("gc-") < len(stored)


@postgresql_only
@pytest.mark.django_db(transaction=True)
def test_one_transno_twice_in_a_group_is_written_once_as_if_one_came_after_the_other(monkeypatch):
    # A window long enough that all six wait for each other: one group.
    monkeypatch.setattr(GROUP_COMMIT, "window", 0.5)
    monkeypatch.setattr(GROUP_COMMIT, "_max_size", 6)
    same = usage_payload(transno="gc-twice-same")
    other = usage_payload(transno="gc-twice-other")
    bodies = [same, same, other, {**other, "output_tokens": 1}, usage_payload(transno="gc-twice-3"), same]
    statuses: dict[int, str] = {}
    GROUP_COMMIT.reset_stats()

    in_threads(
        6,
        lambda i: statuses.__setitem__(i, usage_ingest(body=json.dumps(bodies[i]).encode()).items[0].status),
    )

    stats = GROUP_COMMIT.reset_stats()
    assert (stats.groups, stats.records) == (1, 6)
    assert sorted(statuses[i] for i in (0, 1, 5)) == ["created", "duplicate", "duplicate"]
    assert sorted(statuses[i] for i in (2, 3)) == ["conflict", "created"]
    assert statuses[4] == "created"
    assert Counter(
        LLMUsage.objects.filter(transno__startswith="gc-twice").values_list("transno", flat=True)
    ) == {
        "gc-twice-same": 1,
        "gc-twice-other": 1,
        "gc-twice-3": 1,
    }
    assert commits_that_wrote("gc-twice") == 1


@postgresql_only
@pytest.mark.django_db(transaction=True)
def test_a_group_whose_write_fails_leaves_each_record_to_be_written_alone(monkeypatch):
    monkeypatch.setattr(GROUP_COMMIT, "window", 0.5)
    monkeypatch.setattr(GROUP_COMMIT, "_max_size", 4)
    real = service.insert_usage_rows_if_new
    calls = []

    def failing_once(rows):
        calls.append(len(rows))
        if len(calls) == 1:
            raise DataError("a row the database refused")
        return real(rows)

    monkeypatch.setattr(service, "insert_usage_rows_if_new", failing_once)
    statuses: dict[int, str] = {}

    in_threads(
        4,
        lambda i: statuses.__setitem__(
            i, usage_ingest(body=json.dumps(usage_payload(transno=f"gc-alone-{i}")).encode()).items[0].status
        ),
    )

    assert calls == [4]  # the group failed once; each record then went alone, not through a group
    assert statuses == {i: "created" for i in range(4)}
    assert LLMUsage.objects.filter(transno__startswith="gc-alone-").count() == 4


@postgresql_only
@pytest.mark.django_db(transaction=True)
def test_switched_off_each_record_commits_alone(settings):
    settings.LLMLOG_INGEST_GROUP_COMMIT = False
    GROUP_COMMIT.reset_stats()

    in_threads(
        4,
        lambda t: [
            usage_ingest(body=json.dumps(usage_payload(transno=f"gc-off-{t}-{i}")).encode())
            for i in range(10)
        ],
    )

    assert GROUP_COMMIT.reset_stats().records == 0
    assert commits_that_wrote("gc-off-") == 40


# --- over HTTP, under gunicorn --------------------------------------------------------------------


def _post(conn: http.client.HTTPConnection, key: str, payload: dict) -> tuple[int, dict]:
    conn.request(
        "POST",
        "/api/llmusage/",
        body=json.dumps(payload),
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
    )
    response = conn.getresponse()
    return response.status, json.loads(response.read() or b"{}")


@postgresql_only
@pytest.mark.django_db(transaction=True)
def test_over_http_each_request_gets_its_own_answer_and_records_share_commits(tmp_path):
    key = api_key_create(userorgid="", role="admin", scopes=["ingest"])[1]
    clients, per_client = 8, 30
    answers: dict[tuple, int] = {}

    with gunicorn_server(tmp_path, workers=1, threads=8) as port:

        def work(c: int) -> None:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            for i in range(per_client):
                payload = usage_payload(transno=f"gc-http-{c}-{i}", output_tokens=300 + i)
                answers[(c, i)] = _post(conn, key, payload)[0]
                if i % 6 == 0:
                    answers[(c, i, "resend")] = _post(conn, key, payload)[0]
                    answers[(c, i, "changed")] = _post(conn, key, {**payload, "output_tokens": 1})[0]
                    answers[(c, i, "bad")] = _post(
                        conn, key, {**payload, "transno": f"gc-bad-{c}-{i}", "code": "x"}
                    )[0]
            conn.close()

        in_threads(clients, work)

    expected = {"resend": 200, "changed": 409, "bad": 400}
    wrong = {
        key: status
        for key, status in answers.items()
        if status != (expected[key[2]] if len(key) == 3 else 201)
    }
    assert not wrong
    stored = Counter(LLMUsage.objects.filter(transno__startswith="gc-").values_list("transno", flat=True))
    assert stored == {f"gc-http-{c}-{i}": 1 for c in range(clients) for i in range(per_client)}
    assert commits_that_wrote("gc-http-") < len(stored)


def _children(pid: int) -> list[int]:
    return [
        int(child)
        for task in Path(f"/proc/{pid}/task").iterdir()
        for child in (task / "children").read_text().split()
    ]


def _gunicorn_master(port: int) -> int:
    """The gunicorn that tests.servers started for this test: our child, bound to `port`."""
    bind = f"--bind=127.0.0.1:{port}".encode()
    (master,) = [
        pid
        for pid in _children(os.getpid())
        if bind in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    ]
    return master


@postgresql_only
@pytest.mark.django_db(transaction=True)
def test_a_worker_killed_mid_load_has_stored_every_record_it_acknowledged(tmp_path):
    key = api_key_create(userorgid="", role="admin", scopes=["ingest"])[1]
    acknowledged: set[str] = set()
    unanswered: set[str] = set()
    lock = threading.Lock()
    stop = threading.Event()

    with gunicorn_server(tmp_path, workers=1, threads=8) as port:
        master = _gunicorn_master(port)
        (worker,) = _children(master)

        def work(c: int) -> None:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            i = 0
            while not stop.is_set():
                transno = f"gc-kill-{c}-{i}"
                i += 1
                try:
                    status, _ = _post(conn, key, usage_payload(transno=transno))
                except (OSError, http.client.HTTPException):
                    conn.close()
                    with lock:
                        unanswered.add(transno)
                    time.sleep(0.05)  # the master is starting a new worker
                    continue
                with lock:
                    (acknowledged if status == 201 else unanswered).add(transno)
            conn.close()

        killer = threading.Timer(1.5, lambda: os.kill(worker, signal.SIGKILL))
        killer.start()
        threading.Timer(4.0, stop.set).start()
        in_threads(8, work)
        killer.join()

        stored = set(
            LLMUsage.objects.filter(transno__startswith="gc-kill-").values_list("transno", flat=True)
        )
        assert acknowledged and unanswered, (len(acknowledged), len(unanswered))
        assert acknowledged <= stored  # acknowledged means committed

        # The gateway resends what it got no answer for: stored before the kill or not, each is there once.
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        resent = {
            transno: _post(conn, key, usage_payload(transno=transno))[0] for transno in sorted(unanswered)
        }
        conn.close()

    assert set(resent.values()) <= {200, 201}
    assert {t for t, status in resent.items() if status == 200} == unanswered & stored
    counts = Counter(
        LLMUsage.objects.filter(transno__startswith="gc-kill-").values_list("transno", flat=True)
    )
    assert set(counts) == acknowledged | unanswered
    assert set(counts.values()) == {1}
