"""Who may do what in the accounting and budgets APIs, and what they share: the role per action, the
`{org}` of a path, the query parameters sent, the 409 they document."""

from drf_spectacular.utils import OpenApiResponse
from rest_framework import exceptions, permissions
from rest_framework.request import Request

from llmlog.api.auth import ADMIN_ROLES, Caller, caller_of

CONFLICT = OpenApiResponse(
    {"type": "object", "properties": {"detail": {"type": "string"}}, "additionalProperties": True},
    "It exists already (an account), or the same reference was used for another amount (a top-up), "
    "or the failure is resolved (ignore).",
)


# An org is at most 64 characters of text that PostgreSQL can hold (no NUL, no lone surrogate).
MAX_ORG_LENGTH = 64


def is_platform_admin(caller: Caller) -> bool:
    return caller.is_platform_admin


def checked_org(org: str) -> str:
    """The `{org}` of a path, or a 400 naming it: a NUL or a lone surrogate would reach the database as
    an error (a 500), and no org is longer than the column."""
    if "\x00" in org:
        raise exceptions.ValidationError({"org": "Must not contain NUL characters."})
    try:
        org.encode()
    except UnicodeEncodeError:
        raise exceptions.ValidationError({"org": "Must be valid UTF-8 text."}) from None
    if len(org) > MAX_ORG_LENGTH:
        raise exceptions.ValidationError({"org": f"At most {MAX_ORG_LENGTH} characters."})
    return org


class RoleForAction(permissions.BasePermission):
    """`platform_admin_actions` need a platform admin; `org_admin_actions` an admin or owner key."""

    def has_permission(self, request, view) -> bool:
        caller = caller_of(request)
        action_name = getattr(view, "action", None)
        if action_name in getattr(view, "platform_admin_actions", ()):
            self.message = "Only a platform admin (a platform key with role admin or owner) may do this."
            return is_platform_admin(caller)
        if action_name in getattr(view, "org_admin_actions", ()):
            self.message = "Only a key with role admin or owner may do this."
            return caller.role in ADMIN_ROLES
        return True


def own_org(caller: Caller, org: str | None, field: str) -> str:
    """The org a write is for: an org key's own (naming another is a 403); a platform caller names it."""
    if caller.is_platform:
        if not org:
            raise exceptions.ValidationError({field: "A platform caller names the org."})
        return org
    if org and org != caller.userorgid:
        raise exceptions.PermissionDenied(f"{field}: an org key acts for its own org only.")
    return caller.userorgid


def given_params(request: Request) -> dict[str, str]:
    """The query parameters sent with a value: an empty one is one not sent, as everywhere in the API."""
    return {name: value for name, value in request.query_params.items() if value != ""}
