"""llmlog's models, a module per kind: the usage tables (`usage`), prices (`prices`), API keys (`keys`),
the operators' audit and the jobs' runs (`audit`), the hourly rollups (`rollups`).

Django imports this package as the app's models module, so it imports every model; the names are the
app's model names, which migrations and other modules use as `llmlog.models.<Name>`.
"""

from llmlog.models.audit import JobRun, UsageAudit
from llmlog.models.keys import ApiKey, hash_api_key
from llmlog.models.prices import ModelPrice
from llmlog.models.rollups import ROLLUP_MONEY_DIGITS, UsageRollup, UsageRollupStale, UsageRollupState
from llmlog.models.usage import (
    TOKEN_COUNT_FIELDS,
    AccountingStatus,
    LLMUsage,
    LLMUsageHistory,
    NextUsageSeq,
    UsageAll,
    UsageRecord,
    UsageStatus,
)

__all__ = [
    "ROLLUP_MONEY_DIGITS",
    "TOKEN_COUNT_FIELDS",
    "AccountingStatus",
    "ApiKey",
    "JobRun",
    "LLMUsage",
    "LLMUsageHistory",
    "ModelPrice",
    "NextUsageSeq",
    "UsageAll",
    "UsageAudit",
    "UsageRecord",
    "UsageRollup",
    "UsageRollupStale",
    "UsageRollupState",
    "UsageStatus",
    "hash_api_key",
]
