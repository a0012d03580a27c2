"""API keys: created with their raw value shown once, revoked, looked up by hash."""

from collections.abc import Iterable

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


def api_key_lookup(raw: str) -> ApiKey | None:
    return ApiKey.objects.filter(key_hash=hash_api_key(raw)).first()
