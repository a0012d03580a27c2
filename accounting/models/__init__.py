"""The ledger side's models, a module per subject: the accounts and the double-entry ledger (`accounts`),
failed postings (`failures`), budgets, their counters and alerts, and holds (`budgets`), re-pricing runs
(`repricing`), monthly statements (`statements`). They never import llmlog's models: the ledger receives
plain values and ids.

Django imports this package as the app's models module, so it imports every model; the names are the
app's model names, which other modules use as `accounting.models.<Name>`. Migrations also name the
fields' defaults and validators here (`accounting.models.default_time_zone`, `validate_time_zone`,
`default_thresholds`), so those paths keep resolving.
"""

from accounting.models.accounts import (
    Account,
    LedgerLine,
    LedgerTransaction,
    default_time_zone,
    validate_time_zone,
)
from accounting.models.budgets import (
    SPENT_DIGITS,
    Budget,
    BudgetAlert,
    BudgetSpend,
    Hold,
    default_thresholds,
)
from accounting.models.failures import AccountingFailure
from accounting.models.repricing import Repricing, RepricingItem
from accounting.models.statements import Statement

__all__ = [
    "SPENT_DIGITS",
    "Account",
    "AccountingFailure",
    "Budget",
    "BudgetAlert",
    "BudgetSpend",
    "Hold",
    "LedgerLine",
    "LedgerTransaction",
    "Repricing",
    "RepricingItem",
    "Statement",
    "default_thresholds",
    "default_time_zone",
    "validate_time_zone",
]
