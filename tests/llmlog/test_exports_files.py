"""`manage.py export_usage --month YYYY-MM --format parquet|jsonl --out PATH [--org O]`: every record of
the month (hot and history, every column), read back equal to the database's rows, with a manifest whose
rows, sums and sha256 are the database's and the file's."""

import hashlib
import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from uuid import UUID
from zoneinfo import ZoneInfo

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from django.core.management import CommandError, call_command
from django.db.models import Count, Sum

from llmlog.exports import writers
from llmlog.exports.columns import export_columns
from llmlog.exports.period import month_period
from llmlog.exports.records import _records, export_usage
from llmlog.models import UsageAll
from llmlog.queries import UsageQuery
from llmlog.replicas import reading_from
from llmlog.selectors.records import usage_matching
from tests.factories import make_usage, move_to_history

pytestmark = pytest.mark.django_db

ZONE = "Asia/Tokyo"  # UTC+9: November there is 31 October 15:00 UTC to 30 November 15:00 UTC
TOKYO = ZoneInfo(ZONE)


@pytest.fixture
def month(settings) -> list:
    """Records of November 2026 in Tokyo, hot and history, with every kind of value a column can hold
    (JSON, no amount, an address, fractions of a cent; SQLite keeps money as a float: 11 digits); and
    records just outside it."""
    settings.TIME_ZONE = ZONE
    inside = [
        make_usage(
            use_time=datetime(2026, 11, 1, 0, 0, tzinfo=TOKYO),
            amount=Decimal("0.00001"),
            request_ip="10.0.0.1",
        ),
        make_usage(
            use_time=datetime(2026, 11, 15, 12, 30, 15, 123456, tzinfo=TOKYO),
            amount=Decimal("123456.78901"),
            cost=Decimal("1234.56789"),
            usages={"prompt_tokens": 100, "details": {"cached": [1, 2]}},
            ioinfo={"request": "héllo ✓", "response": None, "truncated": False},
            metadata={"incidentId": "i-1", "n": 1.5},
            request_ip="2001:db8::1",
            responsed_seconds=0.25,
            is_stream=True,
            accounting_status="accounted",
        ),
        make_usage(  # text a CSV must keep apart: newlines, quotes, commas, words that read as null
            userorgid="globex",
            use_time=datetime(2026, 11, 30, 23, 59, tzinfo=TOKYO),
            error_message='line one\nline "two", three\r\n',
            username="NULL",
            feature="N/A",
            token_name="",
            finish_seconds=0.1,
        ),
        make_usage(use_time=datetime(2026, 11, 20, tzinfo=TOKYO), amount=None, cost=None, code=None),
    ]
    move_to_history(inside[1])
    make_usage(use_time=datetime(2026, 10, 31, 23, 59, tzinfo=TOKYO))
    make_usage(use_time=datetime(2026, 12, 1, 0, 0, tzinfo=TOKYO))
    return inside


def database_rows(org: str = "") -> list[dict[str, Any]]:
    period = month_period("2026-11")
    records = UsageAll.objects.filter(use_time__gte=period.start, use_time__lt=period.end)
    if org:
        records = records.filter(userorgid=org)
    return list(records.order_by("use_time", "id").values())


def comparable(row: dict[str, Any]) -> dict[str, Any]:
    """A database row in the file's terms: ids and addresses as text, times in UTC."""
    out = {}
    for name, value in row.items():
        if isinstance(value, UUID):
            value = str(value)
        elif isinstance(value, datetime):
            value = value.astimezone(UTC)
        out[name] = value
    return out


def read_parquet(path: Path) -> list[dict[str, Any]]:
    rows = pq.read_table(path).to_pylist()
    json_columns = [column.name for column in export_columns(UsageAll) if column.is_json]
    for row in rows:
        for name in json_columns:
            row[name] = None if row[name] is None else json.loads(row[name])
    return rows


def export(tmp_path: Path, fmt: str, **options: Any) -> tuple[Path, dict[str, Any]]:
    out = tmp_path / f"usage.{fmt}"
    call_command("export_usage", month="2026-11", format=fmt, out=str(out), **options)
    manifest = json.loads(Path(f"{out}.manifest.json").read_text())
    return out, manifest


def test_the_parquet_file_read_back_equals_the_rows(tmp_path, month):
    out, _ = export(tmp_path, "parquet")

    rows = database_rows()
    assert len(rows) == 4
    assert read_parquet(out) == [comparable(row) for row in rows]


def test_money_and_times_have_exact_types(tmp_path, month):
    out, _ = export(tmp_path, "parquet")

    schema = pq.read_schema(out)
    assert schema.field("amount").type == pa.decimal128(18, 5)
    assert schema.field("cost").type == pa.decimal128(18, 5)
    assert schema.field("use_time").type == pa.timestamp("us", tz="UTC")
    assert schema.field("use_date").type == pa.date32()
    assert schema.field("input_tokens").type == pa.int64()
    assert schema.field("metadata").metadata == {b"llmlog.json": b"true"}
    amounts = pq.read_table(out, columns=["amount"]).column("amount").to_pylist()
    assert Decimal("123456.78901") in amounts and Decimal("0.00001") in amounts


def test_the_manifest_holds_the_databases_rows_sums_and_the_files_sha256(tmp_path, month):
    out, manifest = export(tmp_path, "parquet")

    period = month_period("2026-11")
    totals = UsageAll.objects.filter(use_time__gte=period.start, use_time__lt=period.end).aggregate(
        rows=Count("id"), amount=Sum("amount"), cost=Sum("cost")
    )
    assert manifest["rows"] == totals["rows"] == 4
    assert Decimal(manifest["amount_sum"]) == totals["amount"] == Decimal("123456.79902")
    assert Decimal(manifest["cost_sum"]) == totals["cost"]
    assert manifest["sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()
    assert manifest["bytes"] == out.stat().st_size
    assert manifest["month"] == "2026-11" and manifest["format"] == "parquet"
    assert manifest["time_zone"] == ZONE and manifest["org"] is None
    assert manifest["period_start"] == "2026-11-01T00:00:00+09:00"
    assert [column["name"] for column in manifest["columns"]] == list(database_rows()[0])
    assert manifest["created_at"].endswith("Z")


def test_the_jsonl_file_read_back_equals_the_rows(tmp_path, month):
    out, manifest = export(tmp_path, "jsonl")

    lines = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    rows = database_rows()
    assert len(lines) == manifest["rows"] == len(rows)
    for line, row in zip(lines, rows, strict=True):
        assert set(line) == set(row)
        for name, value in row.items():
            if isinstance(value, Decimal):
                assert line[name] == f"{value:f}" and isinstance(line[name], str)  # money as text, exact
            elif isinstance(value, datetime):
                assert line[name].endswith("Z")
                assert datetime.fromisoformat(line[name]) == value
            elif isinstance(value, UUID):
                assert line[name] == str(value)
            elif name in ("use_date",):
                assert line[name] == value.isoformat()
            else:
                assert line[name] == value, name
    assert manifest["sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()
    assert Decimal(manifest["amount_sum"]) == sum(Decimal(line["amount"]) for line in lines if line["amount"])


def test_an_export_reads_the_primary_where_the_reads_around_it_go_to_a_replica():
    with reading_from("replica"):  # as inside a read that chose a replica
        around = usage_matching(query=UsageQuery())
        records = _records(period=month_period("2026-11"), org="")

    assert (around.db, records.db) == ("replica", "default")


def test_one_org(tmp_path, month):
    out, manifest = export(tmp_path, "parquet", org="globex")

    rows = database_rows(org="globex")
    assert len(rows) == manifest["rows"] == 1
    assert read_parquet(out) == [comparable(row) for row in rows]
    assert manifest["org"] == "globex"


def test_batches_are_row_groups(tmp_path, month):
    out = tmp_path / "usage.parquet"
    result = export_usage(period=month_period("2026-11"), fmt="parquet", out=out, batch_size=3)

    assert pq.ParquetFile(out).metadata.num_row_groups == 2  # 4 records, 3 at a time
    assert result.manifest["rows"] == 4
    assert read_parquet(out) == [comparable(row) for row in database_rows()]


def test_an_empty_month_is_an_empty_file_with_its_columns(tmp_path, month):
    out = tmp_path / "empty.parquet"
    call_command("export_usage", month="2026-09", format="parquet", out=str(out))

    table = pq.read_table(out)
    assert table.num_rows == 0
    assert table.column_names == [column.name for column in export_columns(UsageAll)]
    assert json.loads(Path(f"{out}.manifest.json").read_text())["amount_sum"] == "0"


def test_every_column_of_the_usage_record_is_exported():
    """Read from the model: a field added to the usage record is exported without a change."""
    names = [column.name for column in export_columns(UsageAll)]
    assert names == [field.attname for field in UsageAll._meta.concrete_fields]
    assert {"amount", "cost", "ioinfo", "backup_time", "source"} <= set(names)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"month": "2026-13", "format": "parquet"}, "--month"),
        ({"month": "November", "format": "parquet"}, "YYYY-MM"),
        ({"month": "2026-11", "format": "csv"}, "invalid choice"),
    ],
)
def test_a_bad_month_or_format_is_a_command_error(tmp_path, options, message):
    with pytest.raises(CommandError, match=message):
        call_command("export_usage", out=str(tmp_path / "x"), **options)
    assert list(tmp_path.iterdir()) == []


def test_a_missing_folder_is_a_command_error(tmp_path):
    with pytest.raises(CommandError, match="does not exist"):
        call_command("export_usage", month="2026-11", format="jsonl", out=str(tmp_path / "no" / "x.jsonl"))


def test_a_failed_export_leaves_no_file(tmp_path, month, monkeypatch):
    def broken(self, batch):
        raise RuntimeError("disk full")

    monkeypatch.setattr(writers.JsonLinesWriter, "write", broken)
    out = tmp_path / "usage.jsonl"
    with pytest.raises(RuntimeError, match="disk full"):
        export_usage(period=month_period("2026-11"), fmt="jsonl", out=out)
    assert list(tmp_path.iterdir()) == []
