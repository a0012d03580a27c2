"""The accounting app's admin: accounts (top-up, freeze), the ledger (read-only), the ledger's half of the
failed-postings page, and budgets, holds and the alert log.

Monthly statements: the closed months and their print-ready pages (statements.py).

The failed-postings page is registered by llmlog's admin (`llmlog.admin.failures`): it subclasses
`accounting.admin.failures.AccountingFailureAdmin` with what reads usage rows, because accounting never
imports llmlog.

Every list here is bounded: the ledger grows by one transaction and three lines per usage record, and
failures can pile up by the million when an org has no account, so no page COUNTs a whole table.

A new page of the app goes in a module of this package, imported below.
"""

# Importing them registers their pages (Django's autodiscover imports this package only).
from accounting.admin import accounts, budgets, failures, ledger, statements  # noqa: F401
