"""Kept only for tests/accounting/test_budgets.py and test_budget_flow.py (being edited in parallel): use
tests.factories instead."""

from tests.factories import USE_TIME, balance, insert_usage, make_accounts, usage_row  # noqa: F401
