"""The raw-SQL ceiling of bench_load's mix: as many threads as the load has clients, each on its own
psycopg connection, run one statement per commit for a while: one record INSERTed as ingest writes it
(what a single-record ingest must do), or the list read's SELECT of a random org's page.
"""

import random
import threading
import time
import uuid
from collections.abc import Callable

from benchmarks.data import raw_connection, usage_insert_sql, usage_values
from benchmarks.processes import run_threads

# One round of a statement: (statements per second, sorted latencies in ms).
Rate = tuple[float, list[float]]


def raw_ceiling(*, clients: int, seconds: float, statement: Callable[[object, random.Random], None]) -> Rate:
    """`clients` threads on their own psycopg connections run `statement` (one per commit) for
    `seconds`: (statements per second, latencies in ms)."""
    latencies: list[float] = []
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def worker(number: int) -> None:
        rng = random.Random(number)
        conn = raw_connection()
        mine = []
        while time.monotonic() < deadline:
            started = time.perf_counter()
            statement(conn, rng)
            conn.commit()
            mine.append((time.perf_counter() - started) * 1000)
        conn.close()
        with lock:
            latencies.extend(mine)

    elapsed = run_threads([threading.Thread(target=worker, args=(n,)) for n in range(clients)])
    return len(latencies) / elapsed, sorted(latencies)


def ceiling_statements(orgs: list[str]) -> tuple[Callable, Callable]:
    """The ceilings' statements: one record INSERTed as ingest writes it, and the list read's SELECT of
    a random org's page."""
    from django.utils import timezone

    from llmlog.demo import demo_rows

    insert, template = usage_insert_sql(), next(demo_rows(rows=1))

    def insert_one(conn, rng: random.Random) -> None:
        row = dict(
            template, id=uuid.uuid4(), transno=f"raw-load-{uuid.uuid4().hex}", created_at=timezone.now()
        )
        conn.execute(insert, usage_values(row))

    def select_page(conn, rng: random.Random) -> None:
        conn.execute(
            "SELECT * FROM llmusage_all WHERE userorgid = %s ORDER BY use_time DESC, id DESC LIMIT 21",
            [rng.choice(orgs)],
        ).fetchall()

    return insert_one, select_page


def mix_ceiling_rounds(
    *, orgs: list[str], clients: int, seconds: float, repeat: int
) -> list[tuple[Rate, Rate]]:
    """`repeat` rounds of the raw statements, `clients` threads straight to PostgreSQL for `seconds`
    each: (the INSERT's round, the SELECT's round) of each. The records INSERTed are deleted after."""
    insert_one, select_page = ceiling_statements(orgs)
    rounds = [
        (
            raw_ceiling(clients=clients, seconds=seconds, statement=insert_one),
            raw_ceiling(clients=clients, seconds=seconds, statement=select_page),
        )
        for _ in range(repeat)
    ]
    with raw_connection() as conn:
        conn.execute("DELETE FROM llmusage WHERE transno LIKE 'raw-load-%'")
    return rounds
