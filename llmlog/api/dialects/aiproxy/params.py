"""AI Proxy's parameters: what its log search asks for, as a UsageQuery."""

from datetime import timedelta
from typing import Any

from llmlog.api.dialects.common import (
    bad_input,
    time_param,
)
from llmlog.models import UsageStatus
from llmlog.queries import UsageQuery

DEFAULT_PER_PAGE = 10
# Facets are the distinct values of this many newest records of the range (see the module docstring):
# enough to hold every model, token and channel in recent use, small enough that the read (one index
# range plus a heap fetch per record) stays a few milliseconds however big the table grows.
FACET_SAMPLE = 5_000
CODE_TYPES: dict[str, str | None] = {"all": None, "success": UsageStatus.SUCCESS, "error": UsageStatus.FAILED}


def log_query(params: Any, *, org: str) -> UsageQuery:
    """The records AI Proxy's filter parameters name, in `org` ("" = every org)."""
    code_type = params.get("code_type", "").strip() or "all"
    if code_type not in CODE_TYPES:
        raise bad_input("code_type", f"Expected one of: {', '.join(CODE_TYPES)}; got {code_type!r}.")
    start = time_param(params, "start_timestamp", unit="ms")
    end = time_param(params, "end_timestamp", unit="ms")
    if start and end and end < start:
        raise bad_input("end_timestamp", "Must not be before start_timestamp.")
    equal = {name: params.get(name, "").strip() for name in ("model_name", "token_name")}
    return UsageQuery(
        org=org,
        start=start,
        end=end + timedelta(milliseconds=1) if end else None,  # inclusive to the millisecond, as AI Proxy's
        status=CODE_TYPES[code_type],
        **{name: value for name, value in equal.items() if value},
    )
