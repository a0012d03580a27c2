"""The statements llmlog sends to ClickHouse run alike on Debian's server (18.16, 2018) and on today's
engine (chdb, in-process): the tables' DDL, the inserts, every read (sums, groups by model and day in a
zone, counts, pages in each order), the mirror's day sums, the purges' mutations and partition drops, and
the rollups' day keys, partition swaps and a BI tool's query, compared answer for answer. No database
needed: both passes run it."""

import json
import re
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from llmlog.clickhouse.client import PARTITIONS_SQL, PENDING_MUTATIONS_SQL
from llmlog.clickhouse.mirror import day_sums_sql, delete_sql
from llmlog.clickhouse.reads import Split, _day_key, _where, page_sql
from llmlog.clickhouse.rollup_mirror import rollup_day_key, rollup_day_keys_sql, summed_columns, swap_day_sql
from llmlog.clickhouse.schema import (
    DAY_MICROSECONDS,
    ROLLUP_STAGING_TABLE,
    ROLLUP_TABLE,
    TABLE,
    Column,
    column_list,
    history_columns,
    history_table_ddl,
    micros,
    rollup_columns,
    rollup_table_ddls,
)
from llmlog.queries import EVERY_RECORD, Ordering, UsageQuery
from llmlog.rollups import BUCKET_FIELDS
from tests.factories import usage_row

pytestmark = pytest.mark.clickhouse

MARK = datetime(2026, 11, 30, tzinfo=UTC)
START = datetime(2026, 9, 28, 22, 30, 0, 123456, tzinfo=UTC)


def _rows() -> list[tuple]:
    """60 history records over two and a half months, odd amounts, some unpriced, two past the mark."""
    rows = []
    for number in range(60):
        use_time = START + timedelta(days=number * 37 // 24, hours=number * 5, microseconds=number)
        values = usage_row(
            use_time=use_time,
            use_date=use_time.date(),
            userorgid=("acme", "globex", "initech")[number % 3],
            model_name=("gpt-4o", "claude-3")[number % 2],
            amount=None if number % 11 == 0 else Decimal(number * 7919 % 100_000).scaleb(-5),
            cost=Decimal(number).scaleb(-3),
            input_tokens=number * 13,
            total_tokens=number * 13 + 300,
            status="failed" if number % 7 == 0 else "success",
            token_key_hash=f"hash-{number % 4}",
            metadata={"n": number},
            accounting_status="accounted",
            backup_time=MARK + timedelta(seconds=1 if number >= 58 else -number),
        )
        values["seq"] = number + 1
        values.setdefault("provider_cost", None)  # a column not every checkout has yet
        rows.append(tuple(_as_clickhouse(column, values[column.attname]) for column in history_columns()))
    return rows


def _as_clickhouse(column: Column, value: Any) -> Any:
    """A model value as the mirror's load sends it (llmlog.clickhouse.schema.Column.source)."""
    if value is None:
        return None
    if column.kind == "JSONField":
        return json.dumps(value)
    if column.kind == "DateTimeField":
        return micros(value)
    if column.kind in ("UUIDField", "GenericIPAddressField"):
        return str(value)
    return value


def _text(value: Any) -> str:
    """A value as both engines' answers are compared: numbers by value (today's engine writes 1.5 where
    18.16 writes 1.50000), NULL as \\N."""
    if value is None:
        return "\\N"
    text = value.isoformat() if isinstance(value, date) else str(value)
    if re.fullmatch(r"-?\d+(\.\d+)?", text):
        return format(Decimal(text).normalize(), "f")
    return text


class Engines:
    """The same statement on the server (clickhouse-driver) and on chdb; answers as rows of text."""

    def __init__(self, server: Any, chdb_session: Any) -> None:
        self.server, self.chdb = server, chdb_session

    def render(self, sql: str, params: dict[str, Any] | None) -> str:
        return self.server.substitute_params(sql, params or {}, self.server.connection.context)

    def both(self, sql: str, params: dict[str, Any] | None = None) -> tuple[list, list]:
        server = [[_text(value) for value in row] for row in self.server.execute(sql, params or {})]
        result = self.chdb.query(self.render(sql, params), "TabSeparated")
        lines = result.bytes().decode().splitlines()
        chdb = [[_text(cell if cell != "\\N" else None) for cell in line.split("\t")] for line in lines]
        return server, chdb

    def same(self, sql: str, params: dict[str, Any] | None = None, *, rows: int | None = None) -> list:
        server, chdb = self.both(sql, params)
        assert server == chdb, sql
        if rows is not None:
            assert len(server) == rows, sql
        return server

    def run(self, sql: str, params: dict[str, Any] | None = None) -> None:
        self.server.execute(sql, params or {})
        self.chdb.query(self.render(sql, params))

    def insert(self, table: str, columns: tuple[Column, ...], rows: list[tuple]) -> None:
        """The same rows into both: the server takes blocks, chdb the rows as SQL text, escaped as the
        driver escapes parameters."""
        insert = f"INSERT INTO {table} ({column_list(columns)}) VALUES"
        self.server.execute(insert, rows)
        values = ", ".join(f"%(r{number})s" for number in range(len(rows)))
        self.chdb.query(self.render(f"{insert} {values}", {f"r{n}": row for n, row in enumerate(rows)}))


@pytest.fixture
def engines(clickhouse_server_url, tmp_path):
    clickhouse_driver = pytest.importorskip("clickhouse_driver")
    chdb_session = pytest.importorskip("chdb.session")
    admin = clickhouse_driver.Client.from_url(clickhouse_server_url)
    admin.execute("DROP DATABASE IF EXISTS sqlcheck")
    admin.execute("CREATE DATABASE sqlcheck")
    server = clickhouse_driver.Client.from_url(clickhouse_server_url.rsplit("/", 1)[0] + "/sqlcheck")
    local = chdb_session.Session(str(tmp_path / "chdb"))
    yield Engines(server, local)
    local.close()
    admin.execute("DROP DATABASE IF EXISTS sqlcheck")


def _wait(engines: Engines) -> None:
    for _ in range(200):
        server, chdb = engines.both(PENDING_MUTATIONS_SQL, {"t": TABLE})
        if server == chdb == [["0"]]:
            return
    pytest.fail("mutations not done")


QUERIES = [
    EVERY_RECORD,
    UsageQuery(org="acme", start=START + timedelta(days=10), end=START + timedelta(days=50)),
    UsageQuery(model_name="claude-3", status="success", day=date(2026, 10, 12)),
    UsageQuery(min_amount=Decimal("0.1"), max_amount=Decimal("0.7"), token_key_hashes=("hash-1", "hash-2")),
    UsageQuery(token_key_hashes=()),
    UsageQuery(userid="u-1", ownerid="openai", channel_id="", group=""),
]


def test_the_same_statements_answer_the_same_on_the_2018_server_and_todays_engine(engines, settings):
    engines.run(history_table_ddl())
    rows = _rows()
    engines.insert(TABLE, history_columns(), rows)
    doubled = f"INSERT INTO {TABLE} ({column_list(history_columns())}) VALUES"
    engines.server.execute(doubled, rows[:5])  # FINAL reads them once
    assert engines.same(f"SELECT count() FROM {TABLE} FINAL") == [["60"]]

    settings.TIME_ZONE = "Asia/Kolkata"
    day = _day_key()[0]
    attnames = [column.attname for column in history_columns()]
    for query in QUERIES:
        where, params = _where(query, MARK)
        split = Split(where=where, params=params, rest=None)
        engines.same(split.sums_sql({}), params, rows=1)
        engines.same(
            split.sums_sql({"model_name": "`model_name`", "day": day}) + " ORDER BY model_name, day", params
        )
        engines.same(f"SELECT count() FROM {TABLE} FINAL WHERE {where}", params, rows=1)
        for ordering in ("-amount", "use_time", "-total_tokens"):
            engines.same(page_sql(split, Ordering.parse(ordering), attnames), {**params, "_depth": 25})
    everything = engines.same(
        page_sql(Split(*_where(EVERY_RECORD, MARK), rest=None), Ordering.parse("-use_time"), attnames),
        {**_where(EVERY_RECORD, MARK)[1], "_depth": 100},
    )
    assert len(everything) == 58  # the two moved after the mark are not read

    sums, params = day_sums_sql(mark=MARK, start=date(2026, 10, 1), end=None)
    engines.same(sums + " ORDER BY use_date", params)

    # The purge: months wholly before the cut-off dropped, then the rest of the days deleted.
    months = engines.same(PARTITIONS_SQL + " ORDER BY partition", {"t": TABLE})
    assert months[:3] == [["202609"], ["202610"], ["202611"]]
    engines.run(f"ALTER TABLE {TABLE} DROP PARTITION 202609")
    engines.run(delete_sql("use_date < toDate(%(before)s)"), {"before": "2026-10-20", "_mark": 10**18})
    _wait(engines)
    engines.run(
        f"ALTER TABLE {TABLE} DELETE WHERE use_date IN %(days)s",
        {"days": (date(2026, 11, 2), date(2026, 11, 3))},
    )
    _wait(engines)
    assert engines.same(PARTITIONS_SQL + " ORDER BY partition", {"t": TABLE})[0] == ["202610"]
    remaining = engines.same(f"SELECT min(use_date), count() FROM {TABLE} FINAL")
    assert remaining[0][0] >= "2026-10-20" and 0 < int(remaining[0][1]) < 60


ROLLUP_START = datetime(2026, 10, 30, tzinfo=UTC)
# docs/scaling.md's example of a BI tool's query (tokens and money per UTC day and model, since a day).
BI_QUERY = f"""
SELECT toDate(toDateTime(intDiv(hour, 1000000)), 'UTC') AS day, model_name,
       sum(requests) AS calls, sum(total_tokens) AS tokens, sum(amount) AS charged
FROM {ROLLUP_TABLE} FINAL
WHERE hour >= toUnixTimestamp(toDateTime('2026-10-31 00:00:00', 'UTC')) * 1000000
GROUP BY day, model_name
ORDER BY day, model_name
"""


def _rollup_rows(*, first_id: int = 1, amount_step: int = 7919) -> list[tuple]:
    """48 buckets, one every 2 hours over four UTC days, money past a record's 18 digits; the last day's
    built_at near 2**62, so its sum passes 2**63 (ClickHouse wraps it around; the key must too)."""
    rows, columns = [], rollup_columns()
    for number in range(48):
        hour = ROLLUP_START + timedelta(hours=number * 2)
        values = {
            "id": first_id + number,
            "hour": micros(hour),
            "userorgid": ("acme", "globex")[number % 2],
            "model_name": ("gpt-4o", "claude-3")[number // 2 % 2],
            "status": "failed" if number % 5 == 0 else "success",
            "amount": Decimal(number * amount_step % 100_000).scaleb(-5) + (10**20 if number % 9 == 0 else 0),
            "cost": Decimal(number).scaleb(-3),
            "built_at": 2**62 + number if number >= 36 else micros(hour + timedelta(minutes=10)),
        }
        # The token sums: a figure of their own in each column.
        rows.append(tuple(values.get(column.name, number * 1000 + len(column.name)) for column in columns))
    return rows


def _day(row: tuple) -> int:
    """A rollup row's UTC day (days since the epoch): its hour is the second column, after the id."""
    return row[1] // DAY_MICROSECONDS


def _exact_day_keys(rows: list[tuple]) -> dict[int, tuple]:
    """Each day's key from the rows, summed exactly in Python (as PostgreSQL sums)."""
    names = [column.name for column in rollup_columns()]
    summed = [names.index(column.name) for column in summed_columns()]
    days: dict[int, list] = {}
    for row in rows:
        sums = days.setdefault(_day(row), [0] * (len(summed) + 1))
        sums[0] += 1
        for position, index in enumerate(summed, start=1):
            sums[position] += row[index]
    return {day: rollup_day_key(sums) for day, sums in days.items()}


def test_the_rollup_statements_answer_the_same_on_both_engines(engines):
    for ddl in rollup_table_ddls():
        engines.run(ddl)
    columns, rows = rollup_columns(), _rollup_rows()
    engines.insert(ROLLUP_TABLE, columns, rows)
    engines.server.execute(f"INSERT INTO {ROLLUP_TABLE} ({column_list(columns)}) VALUES", rows[:6])  # FINAL

    every_day, params = rollup_day_keys_sql(start=None, end=None)
    engines.same(every_day + " ORDER BY day", params, rows=4)
    answered = {row[0]: rollup_day_key(row[1:]) for row in engines.server.execute(every_day, params)}
    assert answered == _exact_day_keys(rows)  # the last day's wrapped sums too
    two_days, params = rollup_day_keys_sql(start=date(2026, 10, 31), end=date(2026, 11, 1))
    engines.same(two_days + " ORDER BY day", params, rows=2)

    # A sync replacing two days: the first rebuilt (new ids and figures, one hour emptied), the second
    # emptied whole; and a day ClickHouse never had dropped (nothing happens).
    first = _day(rows[0])
    rebuilt = [row for row in _rollup_rows(first_id=1000, amount_step=13) if _day(row) == first][:-1]
    engines.run(f"TRUNCATE TABLE {ROLLUP_STAGING_TABLE}")
    engines.insert(ROLLUP_STAGING_TABLE, columns, rebuilt)
    assert engines.same(PARTITIONS_SQL, {"t": ROLLUP_STAGING_TABLE}) == [[str(first)]]
    for day in (first, first + 1, first + 40):
        engines.run(swap_day_sql(day, staged=day == first))
    kept = [row for row in rows if _day(row) > first + 1]
    expected = sorted(rebuilt + kept, key=lambda row: row[1:5])  # by the bucket's key, after the id
    order = ", ".join(BUCKET_FIELDS)
    mirrored = engines.same(f"SELECT {column_list(columns)} FROM {ROLLUP_TABLE} FINAL ORDER BY {order}")
    assert mirrored == [[_text(value) for value in row] for row in expected]
    assert len(engines.same(BI_QUERY)) == 4  # two models a day, on the two days left since the 31st
