"""Records as an org key's gateway sends them: no amount, cost, ownerid or price (only a platform key
may state those; an org key's records are priced from the price book)."""

from typing import Any

from tests.conftest import usage_payload

PLATFORM_ONLY = ("amount", "cost", "ownerid", "price")


def org_payload(**overrides: Any) -> dict[str, Any]:
    """conftest.usage_payload without the platform-only fields (overrides may still add them back)."""
    payload = usage_payload()
    for name in PLATFORM_ONLY:
        payload.pop(name, None)
    payload.update(overrides)
    return payload
