"""Kept only for tests/llmlog/test_selectors.py and test_rollups.py (being edited in parallel): use
tests.factories (make_usage(QUERY_RECORD, ...), move_to_history, ingest_records) instead."""

from functools import partial

from tests.factories import QUERY_RECORD, move_to_history  # noqa: F401
from tests.factories import make_usage as _make_usage

make_usage = partial(_make_usage, QUERY_RECORD)
