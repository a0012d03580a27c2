"""Who is calling: an API key (`Authorization: Bearer <key>` or `ApiKey: <key>`) or a staff session."""

import hmac
from dataclasses import dataclass

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import authentication, exceptions, permissions

from llmlog.api.throttling import auth_failure_count, auth_failures_check, required_scope
from llmlog.keys import api_key_lookup
from llmlog.models import ApiKey, hash_api_key


@dataclass(frozen=True)
class KeyPrincipal:
    """The caller behind an API key, as request.user."""

    key: ApiKey
    is_authenticated: bool = True
    is_staff: bool = False

    def __str__(self) -> str:
        return f"api key {self.key.key_prefix}…"


class ApiKeyAuthentication(authentication.BaseAuthentication):
    def authenticate(self, request):
        raw = self._raw_key(request)
        if raw is None:
            return None
        auth_failures_check(request)  # an address past its failures gets a 429 before any lookup
        key = api_key_lookup(raw)
        # The lookup is an index probe on sha256(key): its timing can only tell an attacker about hashes
        # of keys they already hold, never the next character of a real key. The decision itself is still
        # made in constant time, so it stays safe whatever the lookup becomes (a cache, a prefix match).
        if key is None or not hmac.compare_digest(key.key_hash, hash_api_key(raw)):
            auth_failure_count(request)
            raise exceptions.AuthenticationFailed("Unknown API key.")
        if key.is_revoked:
            auth_failure_count(request)
            raise exceptions.AuthenticationFailed("This API key was revoked.")
        return KeyPrincipal(key=key), key

    def authenticate_header(self, request) -> str:
        return 'Bearer realm="api"'

    @staticmethod
    def _raw_key(request) -> str | None:
        header = request.META.get("HTTP_AUTHORIZATION", "")
        if header:
            scheme, _, value = header.partition(" ")
            if scheme.lower() == "bearer" and value.strip():
                return value.strip()
        value = request.META.get("HTTP_APIKEY", "").strip()
        return value or None


@dataclass(frozen=True)
class Caller:
    """What a request may see and do, whatever authenticated it."""

    userorgid: str  # "" = every org
    scopes: frozenset[str]
    role: str
    is_session: bool = False  # a staff session: its Django permissions were checked by HasScope

    @property
    def is_platform(self) -> bool:
        return not self.userorgid

    @property
    def is_platform_admin(self) -> bool:
        """A platform key with role admin or owner, or a staff session (which HasScope has already
        held to the Django permission of the operation)."""
        return self.is_platform and self.role in ADMIN_ROLES


ADMIN_ROLES = frozenset({ApiKey.Role.ADMIN, ApiKey.Role.OWNER})


def caller_of(request) -> Caller:
    if isinstance(request.auth, ApiKey):
        key = request.auth
        return Caller(userorgid=key.userorgid, scopes=frozenset(key.scopes), role=key.role)
    # A staff session sees every org; what it may do is its Django permissions, checked by HasScope
    # for each operation before any view code runs.
    return Caller(
        userorgid="", scopes=frozenset(ApiKey.Scope.values), role=ApiKey.Role.ADMIN, is_session=True
    )


def actor_of(request) -> str:
    """Who did it, for audit rows, resolved_by and created_by: the key's prefix and name, or the user."""
    if isinstance(request.auth, ApiKey):
        key = request.auth
        return f"api key {key.key_prefix}" + (f" ({key.name})" if key.name else "")
    return request.user.get_username()


# The Django permission a staff session needs, when a view does not name one for the operation: reading
# usage (the native API and every dialect) needs view, ingest needs add, a DELETE needs delete.
SCOPE_PERMISSIONS = {ApiKey.Scope.READ: "llmlog.view_llmusage", ApiKey.Scope.INGEST: "llmlog.add_llmusage"}
DELETE_PERMISSION = "llmlog.delete_llmusage"


def required_permission(request, view) -> str | None:
    """The Django permission a staff session needs for this request: the view's `staff_permissions`
    entry for its action (or HTTP method), else the one its scope or method implies; None when nothing
    says (a session is then refused: an operation nobody placed is closed, not open)."""
    operation = getattr(view, "action", None) or request.method.lower()
    named = getattr(view, "staff_permissions", {})
    if operation in named:
        return named[operation]
    if request.method == "DELETE":
        return DELETE_PERMISSION
    return SCOPE_PERMISSIONS.get(required_scope(request, view))


class HasScope(permissions.BasePermission):
    """An API key needs the scope of the view's `required_scopes` entry for the action (or HTTP method);
    a staff session needs the Django permission of `required_permission` (a superuser has them all)."""

    message = "This API key lacks the scope this endpoint needs."

    def has_permission(self, request, view) -> bool:
        user = request.user
        if user is None or not user.is_authenticated:
            return False
        if not isinstance(request.auth, ApiKey):
            return self._session_may(request, view, user)
        needed = required_scope(request, view)
        if needed is None:
            return True
        if needed not in caller_of(request).scopes:
            self.message = f"This API key lacks the {needed!r} scope."
            return False
        return True

    def _session_may(self, request, view, user) -> bool:
        if not user.is_staff:
            self.message = "Only staff users may use the API from a browser session; use an API key."
            return False
        permission = required_permission(request, view)
        if permission is None:
            self.message = "No Django permission grants this operation to a session; use an API key."
            return False
        if not user.has_perm(permission):
            self.message = f"This operation needs the Django permission {permission!r}."
            return False
        return True


class ApiKeyAuthenticationScheme(OpenApiAuthenticationExtension):
    """Describes the API key to drf-spectacular (both headers work; Bearer is the documented one)."""

    target_class = ApiKeyAuthentication
    name = "ApiKeyAuth"

    def get_security_definition(self, auto_schema):
        return {
            "type": "http",
            "scheme": "bearer",
            "description": "`Authorization: Bearer <key>` or `ApiKey: <key>`",
        }
