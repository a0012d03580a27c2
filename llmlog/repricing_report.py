"""A re-pricing's reports: its summary's columns, and the per-record report as CSV (the items, each
with its deltas and its adjustment)."""

from django.db.models import F
from django.http import StreamingHttpResponse

from accounting.models import Repricing, RepricingItem
from llmlog.csv_export import CsvColumn, csv_response

# The columns of a re-pricing's report per (org, model), in the order the admin's re-pricing page and
# `manage.py reprice`
# show them.
REPORT_COLUMNS = (
    "userorgid",
    "model_name",
    "records",
    "changed",
    "unpriced",
    "old_amount",
    "new_amount",
    "delta_amount",
    "old_cost",
    "new_cost",
    "delta_cost",
)
ITEM_COLUMNS = (
    CsvColumn("usage_id"),
    CsvColumn("transno"),
    CsvColumn("userorgid"),
    CsvColumn("ownerid"),
    CsvColumn("model_name"),
    CsvColumn("use_date"),
    CsvColumn("currency"),
    CsvColumn("treatment"),
    CsvColumn("old_amount", total=True),
    CsvColumn("new_amount", total=True),
    CsvColumn("item_delta_amount", "delta_amount", total=True),
    CsvColumn("old_cost", total=True),
    CsvColumn("new_cost", total=True),
    CsvColumn("item_delta_cost", "delta_cost", total=True),
    CsvColumn("adjustment_id"),
)


def repricing_records_csv(*, repricing: Repricing) -> StreamingHttpResponse:
    """The items of `repricing`, streamed (a server-side cursor: memory stays flat at a million records),
    ending with a totals row."""
    items = (
        RepricingItem.objects.filter(repricing=repricing)
        .annotate(
            item_delta_amount=F("new_amount") - F("old_amount"),
            item_delta_cost=F("new_cost") - F("old_cost"),
        )
        .order_by("id")
    )
    return csv_response(
        queryset=items, columns=ITEM_COLUMNS, filename=f"repricing-{repricing.pk}-records.csv"
    )
