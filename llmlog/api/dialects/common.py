"""What the dialects share: the base view (auth, scope, error envelope), parameter parsing, bounded
page numbers, and the unit conversions their clients expect."""

import json
import re
from collections.abc import Mapping
from datetime import datetime
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

from django.conf import settings
from django.db.models import BigIntegerField, Func
from rest_framework import exceptions
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core.money import MONEY_PLACES
from llmlog.api.auth import HasScope, caller_of
from llmlog.api.errors import SingleValuedQueryMixin
from llmlog.filters import InvalidFilter, parse_time, unstorable_params
from llmlog.queries import page_depth_problem

MAX_PAGE_SIZE = 100


INTEGER = re.compile(r"-?[0-9]{1,19}")


def bad_input(param: str, message: str) -> exceptions.ValidationError:
    """A 400 naming the parameter."""
    return exceptions.ValidationError({param: [message]})


def int_param(
    params: Mapping[str, Any], name: str, *, default: int, minimum: int, maximum: int | None = None
) -> int:
    """An integer query parameter within [minimum, maximum]; absent or empty gives `default`."""
    raw = params.get(name)
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return default
    text = str(raw).strip()
    # ASCII digits, matched whole (int() also takes "1_000" and other scripts' digits); 19 digits at
    # most, which every bound below is far inside.
    if not INTEGER.fullmatch(text):
        raise bad_input(name, f"Expected an integer, got {raw!r}.")
    value = int(text)
    if value < minimum:
        raise bad_input(name, f"Must be at least {minimum}, got {value}.")
    if maximum is not None and value > maximum:
        raise bad_input(name, f"Must be at most {maximum}, got {value}.")
    return value


# A required text parameter: something besides white space (it is stripped before use).
NOT_BLANK: dict[str, Any] = {"type": "string", "pattern": "\\S"}
# The last whole second a timestamp may name: 9999-12-29T23:59:59Z, so that an inclusive end (+1 s or
# +1 ms) stays within the days the native filters take (llmlog.filters.FILTER_DAY_MAX).
MAX_UNIX_SECONDS = 253_402_127_999


def timestamp_schema(unit: str) -> dict[str, Any]:
    """The OpenAPI schema of a timestamp parameter in `unit` ("s" or "ms")."""
    return {"type": "integer", "minimum": 0, "maximum": MAX_UNIX_SECONDS * (1000 if unit == "ms" else 1)}


def time_param(params: Mapping[str, Any], name: str, *, unit: str) -> datetime | None:
    """A unix timestamp parameter in `unit` ("s" or "ms"), a whole number as new-api and AI Proxy take
    it; absent, empty or 0 means no bound (their clients send 0 for "not set")."""
    raw = params.get(name)
    if raw is None or str(raw).strip() in ("", "0"):
        return None
    text = str(raw).strip()
    label = "unix seconds" if unit == "s" else "unix milliseconds"
    if not (text.isascii() and text.isdigit()):
        raise bad_input(name, f"Expected a timestamp in {label} (a whole number), got {text!r}.")
    limit = timestamp_schema(unit)["maximum"]
    if int(text) > limit:
        raise bad_input(name, f"Expected a timestamp in {label} of at most {limit} (the year 9999).")
    try:
        return parse_time(text, name=name, unit=unit)
    except InvalidFilter as exc:
        raise exceptions.ValidationError(exc.errors) from None


def check_page_depth(*, offset: int, size: int, param: str, narrow_with: str) -> None:
    """Refuse a page that ends deeper than MAX_PAGE_DEPTH records (llmlog.queries), naming the page
    parameter and how to narrow the time range instead."""
    problem = page_depth_problem(offset=offset, size=size)
    if problem:
        raise bad_input(param, f"{problem}; narrow the time range with {narrow_with} to reach older records.")


def unix_seconds(moment: datetime | None) -> int | None:
    return None if moment is None else int(moment.timestamp())


def iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


def money_number(value: Decimal | None) -> float | None:
    """Money as a JSON number, as these clients expect (the native API keeps it a decimal string)."""
    return None if value is None else float(value)


# The largest id a 64-bit signed integer holds: what new-api's and AI Proxy's clients decode ids into.
MAX_INT64 = 2**63 - 1


def gateway_number(text: str | None) -> int:
    """A gateway's id (user, token, channel) as new-api's and AI Proxy's clients type it, a number: the
    gateway's own when it is a whole number that fits 64 bits, 0 otherwise (the name travels in its
    own field: username, token_name, channel_name)."""
    if not text or not (text.isascii() and text.isdigit()):
        return 0
    number = int(text)
    return number if number <= MAX_INT64 else 0


def quota_units(amount: Decimal | None) -> int:
    """An amount in new-api's quota units: round(amount x LLMLOG_NEWAPI_QUOTA_PER_UNIT), half to even
    (0 when not priced). The same rule as quota_units_sql, so items add up to /stat."""
    if amount is None:
        return 0
    return int((amount * settings.LLMLOG_NEWAPI_QUOTA_PER_UNIT).to_integral_value(rounding=ROUND_HALF_EVEN))


class QuotaUnits(Func):
    """quota_units in SQL, exact on both databases: the amount as a whole number of its smallest unit
    (10^-MONEY_PLACES; ROUND recovers it exactly from SQLite's REAL), times the quota per unit, divided
    by 10^MONEY_PLACES in integers with the remainder rounded half to even. SQL's ROUND would round
    half away from zero (PostgreSQL numeric) or work on floats (SQLite). NULL when not priced."""

    output_field = BigIntegerField()

    def __init__(self, amount: Any) -> None:
        super().__init__(amount)

    def as_sql(self, compiler: Any, connection: Any, **extra: Any) -> tuple[str, list[Any]]:
        amount_sql, params = compiler.compile(self.source_expressions[0])
        scale = 10**MONEY_PLACES
        per_unit = int(settings.LLMLOG_NEWAPI_QUOTA_PER_UNIT)
        if connection.vendor == "postgresql":
            # numeric all the way: exact, and no bigint overflow for any amount the column holds
            product = f"(ROUND({amount_sql} * {scale}) * {per_unit})"
            quotient, remainder = f"div({product}, {scale})", f"mod({product}, {scale})"
            cast, odd = "CAST({} AS BIGINT)", f"mod({quotient}, 2)"
        else:
            product = f"(CAST(ROUND({amount_sql} * {scale}) AS INTEGER) * {per_unit})"
            quotient, remainder = f"({product} / {scale})", f"({product} % {scale})"
            cast, odd = "{}", f"({quotient} % 2)"
        sql = (
            f"({quotient} + CASE WHEN 2 * {remainder} > {scale} "
            f"OR (2 * {remainder} = {scale} AND {odd} = 1) THEN 1 ELSE 0 END)"
        )
        return cast.format(sql), list(params) * 4


def ioinfo_side(ioinfo: dict | None, side: str) -> tuple[str | None, bool]:
    """One side ("request" or "response") of a record's `ioinfo` as text, and whether ingest cut it.

    Ingest keeps one `truncated` flag for both sides and cuts a side to exactly LLMLOG_IO_LIMIT
    characters, so a side was cut when the flag is set and it has that length; a record ingested under
    another limit falls back to "the longer side was cut" (both, when they are as long)."""
    if not ioinfo or ioinfo.get(side) is None:
        return None, False
    value = ioinfo[side]
    if not isinstance(value, str):
        return json.dumps(value, ensure_ascii=False, separators=(",", ":")), False  # only text is cut
    if not ioinfo.get("truncated"):
        return value, False
    if len(value) == settings.LLMLOG_IO_LIMIT:
        return value, True
    other = ioinfo.get("response" if side == "request" else "request")
    return value, len(value) >= (len(other) if isinstance(other, str) else 0)


def flatten_errors(data: Any) -> str:
    """DRF's error data ({"detail": ...}, {"param": [...]}, [...]) as one line naming each parameter."""
    if isinstance(data, Mapping):
        parts = []
        for name, messages in data.items():
            text = flatten_errors(messages)
            parts.append(text if name in ("detail", "non_field_errors") else f"{name}: {text}")
        return "; ".join(parts)
    if isinstance(data, list | tuple):
        return " ".join(flatten_errors(item) for item in data)
    return str(data)


class DialectView(SingleValuedQueryMixin, APIView):
    """A dialect endpoint: API key (or staff session) with the `read` scope; errors in the dialect's
    envelope with a message naming the parameter."""

    permission_classes = [IsAuthenticated, HasScope]
    required_scopes = {"get": "read", "post": "read", "delete": "read"}

    def error_body(self, message: str, status_code: int) -> Any:
        return {"detail": message}

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        super().initial(request, *args, **kwargs)
        # NUL or a lone surrogate (no query can hold either): a 400 naming the parameter, not a database
        # error. JSON bodies are checked where they are read (a dialect's query).
        unstorable_params(request.query_params, kwargs)

    def handle_exception(self, exc: Exception) -> Response:
        if isinstance(exc, InvalidFilter):
            exc = exceptions.ValidationError(exc.errors)
        response = super().handle_exception(exc)
        response.data = self.error_body(flatten_errors(response.data), response.status_code)
        return response

    def org(self, request: Request) -> str:
        """The caller's org ("" for a platform key or a staff session: every org)."""
        return caller_of(request).userorgid
