"""CSV export of the admin lists: the filtered list, streamed, in the operator's time zone, with a
totals row, and inert in a spreadsheet."""

import csv
import io
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from django.http import StreamingHttpResponse
from django.urls import reverse
from django.utils import timezone

from llmlog.admin.usage import USAGE_CSV_COLUMNS
from llmlog.csv_export import CsvColumn, csv_cell, csv_lines, neutralise
from llmlog.models import TOKEN_COUNT_FIELDS, LLMUsage, LLMUsageHistory
from tests.factories import make_usage

pytestmark = pytest.mark.django_db

USAGE_EXPORT = reverse("admin:llmlog_llmusage_export_csv")
HISTORY_EXPORT = reverse("admin:llmlog_llmusagehistory_export_csv")


def read_csv(response: StreamingHttpResponse) -> list[dict[str, str]]:
    assert response.streaming, "the export must stream"
    text = b"".join(response.streaming_content).decode("utf-8-sig")
    return list(csv.DictReader(io.StringIO(text)))


@pytest.mark.parametrize("value", ["=1+1", "+1", "-1", "@SUM(A1)", "\tx", "\rx", '=HYPERLINK("http://x")'])
def test_text_that_would_start_a_formula_is_neutralised(value) -> None:
    assert neutralise(value) == "'" + value
    assert csv_cell(value, tz=UTC) == "'" + value


def test_plain_text_and_numbers_are_written_as_they_are() -> None:
    assert neutralise("gpt-4o") == "gpt-4o"
    assert csv_cell(Decimal("-1.50000"), tz=UTC) == "-1.50000"  # our own numbers: never a formula
    assert csv_cell(-3, tz=UTC) == "-3"
    assert csv_cell(None, tz=UTC) == ""
    assert csv_cell({"k": "=x"}, tz=UTC) == '{"k": "=x"}'


def test_export_is_the_filtered_list_with_a_totals_row(admin_client) -> None:
    make_usage(transno="a1", userorgid="acme", input_tokens=100, output_tokens=50, amount=Decimal("0.10000"))
    make_usage(
        transno="a2",
        userorgid="acme",
        input_tokens=1000,
        output_tokens=1,
        amount=Decimal("1.25000"),
        cost=Decimal("1.00000"),
    )
    make_usage(transno="a3", userorgid="acme", amount=None, cost=None)  # not priced: adds 0
    make_usage(transno="g1", userorgid="globex", input_tokens=7, output_tokens=7)

    response = admin_client.get(USAGE_EXPORT, {"userorgid": "acme"})
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    assert response["Content-Disposition"].startswith('attachment; filename="llmusage-')
    rows = read_csv(response)
    *records, totals = rows
    assert {row["transno"] for row in records} == {"a1", "a2", "a3"}
    assert totals["use_time"] == "TOTAL (3 rows)"
    assert totals["input_tokens"] == "1200"
    assert totals["output_tokens"] == "101"
    assert totals["total_tokens"] == "1301"
    assert Decimal(totals["amount"]) == Decimal("1.35000")
    assert Decimal(totals["cost"]) == Decimal("1.00800")
    assert totals["transno"] == "" and totals["userorgid"] == ""


def test_export_follows_the_search_and_date_range(admin_client) -> None:
    make_usage(transno="in-range", use_time=datetime(2026, 11, 10, 12, tzinfo=UTC))
    make_usage(transno="too-early", use_time=datetime(2026, 11, 8, 12, tzinfo=UTC))
    rows = read_csv(
        admin_client.get(
            USAGE_EXPORT, {"use_time__range__gte": "2026-11-09", "use_time__range__lte": "2026-11-11"}
        )
    )
    assert [row["transno"] for row in rows[:-1]] == ["in-range"]
    rows = read_csv(admin_client.get(USAGE_EXPORT, {"q": "too-early"}))
    assert [row["transno"] for row in rows[:-1]] == ["too-early"]


def test_export_is_in_the_operators_time_zone(admin_client, settings) -> None:
    settings.TIME_ZONE = "Asia/Tokyo"
    make_usage(transno="late", use_time=datetime(2026, 11, 10, 20, 30, tzinfo=UTC))
    (row, _totals) = read_csv(admin_client.get(USAGE_EXPORT))
    assert row["use_time"] == "2026-11-11 05:30:00+09:00"
    assert row["use_date"] == "2026-11-11"


def test_export_neutralises_what_the_gateway_sent(admin_client) -> None:
    make_usage(transno="x", username='=HYPERLINK("http://evil","click")', error_message="@cmd|' /C calc'!A0")
    row, _ = read_csv(admin_client.get(USAGE_EXPORT))
    assert row["username"] == '\'=HYPERLINK("http://evil","click")'
    assert row["error_message"].startswith("'@")


def test_export_of_selected_rows_is_an_action(admin_client) -> None:
    chosen = make_usage(transno="chosen")
    make_usage(transno="other")
    response = admin_client.post(
        reverse("admin:llmlog_llmusage_changelist"), {"action": "export_csv", "_selected_action": [chosen.pk]}
    )
    row, totals = read_csv(response)
    assert row["transno"] == "chosen"
    assert totals["use_time"] == "TOTAL (1 row)"


def test_history_export_has_the_backup_time(admin_client) -> None:
    make_usage(model=LLMUsageHistory, transno="moved")
    row, totals = read_csv(admin_client.get(HISTORY_EXPORT))
    assert row["transno"] == "moved" and row["backup_time"]
    assert totals["use_time"] == "TOTAL (1 row)"


def test_a_bad_filter_is_a_400_not_a_500(admin_client) -> None:
    response = admin_client.get(USAGE_EXPORT, {"no_such_field__gte": "1"})
    assert response.status_code == 400
    assert b"no_such_field" in response.content


def test_lines_stream_one_row_at_a_time() -> None:
    for n in range(5):
        make_usage(transno=f"s{n}")
    lines = csv_lines(
        queryset=LLMUsage.objects.order_by("transno"),
        columns=[CsvColumn("transno"), CsvColumn("total_tokens", total=True)],
        tz=timezone.get_current_timezone(),
        chunk_size=2,
    )
    assert next(lines) == "\ufeff"
    assert next(lines) == "transno,total_tokens\r\n"
    assert next(lines) == "s0,150\r\n"  # the first row comes before the others are read
    rest = list(lines)
    assert rest[-1] == "TOTAL (5 rows),750\r\n"
    assert len(rest) == 5


def test_export_carries_every_token_kind_and_its_total(admin_client) -> None:
    assert {c.field for c in USAGE_CSV_COLUMNS if c.total} >= {*TOKEN_COUNT_FIELDS, "total_tokens"}
    kinds = dict(cached_tokens=30, cache_creation_tokens=20, image_input_tokens=10, reasoning_tokens=5)
    make_usage(transno="k1", input_tokens=100, output_tokens=50, web_search_count=2, **kinds)
    make_usage(transno="k2", input_tokens=200, output_tokens=60, web_search_count=3, **kinds)

    rows = read_csv(admin_client.get(USAGE_EXPORT))

    assert {row["transno"] for row in rows[:-1]} == {"k1", "k2"}
    assert rows[0]["cache_creation_tokens"] == "20"
    total = rows[-1]
    assert total["use_time"].startswith("TOTAL")
    assert total["input_tokens"] == "300"
    assert total["cache_creation_tokens"] == "40"
    assert total["image_input_tokens"] == "20"
    assert total["web_search_count"] == "5"
    assert total["reasoning_tokens"] == "10"
