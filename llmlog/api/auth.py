"""Who is calling: an API key (`Authorization: Bearer <key>` or `ApiKey: <key>`) or a staff session."""

import hmac
from dataclasses import dataclass

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import authentication, exceptions, permissions

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
        key = api_key_lookup(raw)
        # The lookup is an index probe on sha256(key): its timing can only tell an attacker about hashes
        # of keys they already hold, never the next character of a real key. The decision itself is still
        # made in constant time, so it stays safe whatever the lookup becomes (a cache, a prefix match).
        if key is None or not hmac.compare_digest(key.key_hash, hash_api_key(raw)):
            raise exceptions.AuthenticationFailed("Unknown API key.")
        if key.is_revoked:
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

    @property
    def is_platform(self) -> bool:
        return not self.userorgid


def caller_of(request) -> Caller:
    if isinstance(request.auth, ApiKey):
        key = request.auth
        return Caller(userorgid=key.userorgid, scopes=frozenset(key.scopes), role=key.role)
    # A staff session sees everything, as a platform admin.
    return Caller(userorgid="", scopes=frozenset(ApiKey.Scope.values), role=ApiKey.Role.ADMIN)


class HasScope(permissions.BasePermission):
    """The view's `required_scopes` maps a DRF action (or HTTP method) to the scope it needs."""

    message = "This API key lacks the scope this endpoint needs."

    def has_permission(self, request, view) -> bool:
        user = request.user
        if user is None or not user.is_authenticated:
            return False
        if not isinstance(request.auth, ApiKey) and not user.is_staff:
            self.message = "Only staff users may use the API from a browser session; use an API key."
            return False
        needed = required_scope(request, view)
        if needed is None:
            return True
        if needed not in caller_of(request).scopes:
            self.message = f"This API key lacks the {needed!r} scope."
            return False
        return True


def required_scope(request, view) -> str | None:
    """The scope this request needs: the view's `required_scopes` entry for its action or HTTP method."""
    return view.required_scopes.get(getattr(view, "action", None) or request.method.lower())


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
