"""A budget's chosen fields: what its creator sets (budget_create's parameters, with webhook_secret
besides), in the order the admin's budget form and the API's answer list them. Of these, only
accounting.budgets.UPDATABLE_FIELDS may change once the budget exists."""

from accounting.models import Budget

CHOSEN_FIELDS = (
    "org",
    "name",
    *Budget.SCOPE_FIELDS,
    "period",
    "time_zone",
    "limit",
    "currency",
    "thresholds",
    "action",
    "webhook_url",
)
