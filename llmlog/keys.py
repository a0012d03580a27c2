"""API keys: created with their raw value shown once, revoked, looked up by hash."""

import time
from collections.abc import Iterable

from django.conf import settings
from django.utils import timezone

from llmlog.models import ApiKey, hash_api_key


def api_key_create(
    *, userorgid: str = "", role: str = ApiKey.Role.MEMBER, scopes: Iterable[str], name: str = ""
) -> tuple[ApiKey, str]:
    """A new key and its raw value, which is never stored and cannot be shown again."""
    scopes = sorted(set(scopes))
    unknown = set(scopes) - set(ApiKey.Scope.values)
    if unknown:
        raise ValueError(f"Unknown scope(s): {', '.join(sorted(unknown))}; choose from {ApiKey.Scope.values}")
    if role not in ApiKey.Role.values:
        raise ValueError(f"Unknown role {role!r}; choose from {ApiKey.Role.values}")
    key = ApiKey(name=name, userorgid=userorgid, role=role, scopes=scopes)
    raw = key.assign_new_secret()
    key.save()
    return key, raw


def api_key_revoke(*, key: ApiKey) -> None:
    if key.revoked_at is None:
        key.revoked_at = timezone.now()
        key.save(update_fields=["revoked_at"])
    _recent.pop(key.key_hash, None)


# Keys looked up in the last LLMLOG_API_KEY_CACHE_SECONDS, by hash: without this every API request
# spends a database round trip on its key before its real query (a third of a get-item). A revocation
# takes effect at once in the process that made it and within those seconds in the others.
_recent: dict[str, tuple[float, ApiKey]] = {}
_RECENT_MAX = 10_000


def api_key_lookup(raw: str) -> ApiKey | None:
    digest = hash_api_key(raw)
    now = time.monotonic()
    hit = _recent.get(digest)
    if hit is not None and now - hit[0] < settings.LLMLOG_API_KEY_CACHE_SECONDS:
        return hit[1]
    key = ApiKey.objects.filter(key_hash=digest).first()
    if key is not None:  # unknown keys are not remembered: a flood of them cannot fill the memory
        if len(_recent) >= _RECENT_MAX:
            _recent.clear()
        _recent[digest] = (now, key)
    return key
