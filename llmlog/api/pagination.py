import base64
import binascii
import json
import re
import uuid
from datetime import datetime
from decimal import Decimal, InvalidOperation

from django.db.models import Q, QuerySet
from rest_framework import exceptions
from rest_framework.pagination import BasePagination, PageNumberPagination
from rest_framework.response import Response
from rest_framework.utils.urls import remove_query_param, replace_query_param

from llmlog.queries import MAX_PAGE_DEPTH, InvalidFilter, Ordering
from llmlog.selectors.rows import usage_rows

# What a cursor's sort value may be (a forged cursor is a 400, never a value the database cannot bind).
BIGINT_MAX = 2**63 - 1
CURSOR_INTEGER = re.compile(r"-?[0-9]{1,19}")
CURSOR_DECIMAL = re.compile(r"-?[0-9]{1,30}(\.[0-9]{1,10})?")
CURSOR_MONEY_LIMIT = Decimal(10) ** 28  # UsageRollup's widest money column; usage's is narrower


class PagePagination(PageNumberPagination):
    """Page numbers for the small lists (accounts, ledger lines, failures). A page that is not a whole
    number from 1, or a page_size that is not one from 1 to 100, is a 400 naming it (DRF would answer
    404 "Invalid page." or quietly use the default); a page past the end stays DRF's 404."""

    page_size = 20
    page_size_query_param = "page_size"
    max_page_size = 100

    def paginate_queryset(self, queryset, request, view=None):
        limits = {self.page_query_param: None, self.page_size_query_param: self.max_page_size}
        for name, maximum in limits.items():
            raw = request.query_params.get(name, "")
            value = int(raw) if raw.isascii() and raw.isdigit() else 0
            if raw and not 1 <= value <= (maximum or value):
                bound = f" to {maximum}" if maximum else ""
                message = f"Expected a whole number from 1{bound}, got {raw!r}."
                raise exceptions.ValidationError({name: [message]})
        return super().paginate_queryset(queryset, request, view)

    def get_schema_operation_parameters(self, view) -> list[dict]:
        parameters = super().get_schema_operation_parameters(view)
        for parameter in parameters:
            parameter["schema"]["minimum"] = 1
            if parameter["name"] == self.page_size_query_param:
                parameter["schema"]["maximum"] = self.max_page_size
        return parameters


# --- usage lists: page numbers near the top, a keyset cursor for deep pages ---------------------------


class UsagePagination(BasePagination):
    """`page` / `page_size` (≤ 100) for the first pages, `cursor` for any depth.

    Never counts: a list answers with its page and links, the total is `/count/`. A page number reads
    OFFSET rows, so it stops at MAX_DEPTH records; beyond, the answer's `next_cursor` (a keyset position:
    the last row's sort value and id) reads the next page in constant time at any depth.
    """

    page_size = 20
    max_page_size = 100
    # OFFSET reads and throws away every row before the page: bounded, so no request scans millions.
    MAX_DEPTH = MAX_PAGE_DEPTH

    def paginate_queryset(self, queryset: QuerySet, request, view=None) -> list:
        self.request = request
        params = request.query_params
        self.page_size_value = self._positive_int(params, "page_size", self.page_size)
        if self.page_size_value > self.max_page_size:
            raise exceptions.ValidationError({"page_size": [f"At most {self.max_page_size}."]})
        try:
            self.ordering = Ordering.parse(params.get("ordering"))
        except InvalidFilter as exc:
            raise exceptions.ValidationError(exc.errors) from None
        self.cursor = params.get("cursor") or None
        if self.cursor:
            self.page = None
            queryset = self._after(queryset, self._decode(self.cursor))
            offset = 0
        else:
            self.page = self._positive_int(params, "page", 1)
            if self.page * self.page_size_value > self.MAX_DEPTH:
                raise exceptions.ValidationError(
                    {
                        "page": [
                            f"Page numbers reach the first {self.MAX_DEPTH} records; go deeper with "
                            "`cursor` (each answer's `next_cursor`)."
                        ]
                    }
                )
            offset = (self.page - 1) * self.page_size_value
        # Lists are prepared: PostgreSQL keeps a generic plan only where it costs no more than planning
        # for the values. Searches are not (llmlog.selectors.rows.usage_rows).
        prepare = getattr(view, "action", None) == "list"
        rows = usage_rows(queryset[offset : offset + self.page_size_value + 1], prepare=prepare)
        self.has_next = len(rows) > self.page_size_value
        rows = rows[: self.page_size_value]
        self.next_cursor = self._encode(rows[-1]) if self.has_next else None
        return rows

    def get_paginated_response(self, data) -> Response:
        url = self.request.build_absolute_uri()
        next_url = replace_query_param(url, "cursor", self.next_cursor) if self.next_cursor else None
        if next_url:
            next_url = remove_query_param(next_url, "page")
        previous_url = None
        if self.page and self.page > 1:
            previous_url = replace_query_param(url, "page", self.page - 1)
        return Response(
            {
                "next": next_url,
                "previous": previous_url,
                "next_cursor": self.next_cursor,
                "page": self.page,
                "page_size": self.page_size_value,
                "results": data,
            }
        )

    def get_paginated_response_schema(self, schema: dict) -> dict:
        return {
            "type": "object",
            "required": ["results"],
            "properties": {
                "next": {"type": "string", "nullable": True, "format": "uri"},
                "previous": {"type": "string", "nullable": True, "format": "uri"},
                "next_cursor": {
                    "type": "string",
                    "nullable": True,
                    "description": "Pass as `cursor` for the next page (any depth, constant time).",
                },
                "page": {"type": "integer", "nullable": True, "description": "null when read by cursor."},
                "page_size": {"type": "integer"},
                "results": schema,
            },
        }

    def get_schema_operation_parameters(self, view) -> list[dict]:
        def parameter(name: str, description: str, schema: dict) -> dict:
            return {
                "name": name,
                "required": False,
                "in": "query",
                "description": description,
                "schema": schema,
            }

        return [
            parameter(
                "page",
                f"Page number, from 1; page x page_size at most {self.MAX_DEPTH} (deeper: `cursor`).",
                {"type": "integer", "minimum": 1},
            ),
            parameter(
                "page_size",
                f"Records per page, default {self.page_size}, at most {self.max_page_size}.",
                {"type": "integer", "minimum": 1, "maximum": self.max_page_size},
            ),
            parameter(
                "cursor",
                "`next_cursor` of the previous answer: the next page, at any depth (same `ordering`).",
                {"type": "string"},
            ),
        ]

    # --- helpers ---

    @staticmethod
    def _positive_int(params, name: str, default: int) -> int:
        raw = params.get(name)
        if raw in (None, ""):
            return default
        # ASCII digits only (int() also takes "1_000", spaces and other scripts' digits); at most 19 of
        # them, so the number stays an integer every database binds.
        if not CURSOR_INTEGER.fullmatch(raw):
            raise exceptions.ValidationError({name: [f"{raw!r} is not a whole number."]})
        value = int(raw)
        if value < 1:
            raise exceptions.ValidationError({name: ["Must be 1 or more."]})
        return value

    def _encode(self, row: dict) -> str:
        value = row[self.ordering.field]
        if value is None:  # nullable money sorts as 0 (llmlog.filters.Ordering)
            value = 0
        if isinstance(value, datetime):
            value = value.isoformat()
        position = {"o": self.ordering.value, "v": str(value), "id": str(row["id"])}
        return (
            base64.urlsafe_b64encode(json.dumps(position, separators=(",", ":")).encode())
            .decode()
            .rstrip("=")
        )

    def _decode(self, cursor: str) -> dict:
        invalid = exceptions.ValidationError({"cursor": ["Not a cursor from this API (use `next_cursor`)."]})
        try:
            position = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
            ordering, raw, last_id = position["o"], position["v"], position["id"]
        except (ValueError, KeyError, TypeError, binascii.Error):
            raise invalid from None
        if ordering != self.ordering.value:
            raise exceptions.ValidationError(
                {"cursor": [f"This cursor continues ordering={ordering!r}; ask with that ordering."]}
            )
        try:
            if not isinstance(raw, str) or not isinstance(last_id, str):
                raise ValueError
            if self.ordering.field == "use_time":
                value = datetime.fromisoformat(raw)
                if value.tzinfo is None:
                    raise ValueError
            elif self.ordering.field == "total_tokens":
                value = int(raw) if CURSOR_INTEGER.fullmatch(raw) else None
                if value is None or abs(value) > BIGINT_MAX:  # past a bigint: SQLite cannot bind it
                    raise ValueError
            else:
                value = Decimal(raw) if CURSOR_DECIMAL.fullmatch(raw) else None
                if value is None or abs(value) >= CURSOR_MONEY_LIMIT:
                    raise ValueError
            uuid_value = uuid.UUID(last_id)
        except (ValueError, InvalidOperation, OverflowError):
            raise invalid from None
        return {"value": value, "id": uuid_value}

    def _after(self, queryset: QuerySet, position: dict) -> QuerySet:
        """Rows after `position` in the queryset's order. `sort <= v` (or >=) comes first on its own so
        the index on the sort column bounds the scan; the tie on equal values is broken by id."""
        key, value, last_id = self.ordering.sort_alias, position["value"], position["id"]
        if self.ordering.descending:
            return queryset.filter(
                Q(**{f"{key}__lte": value}), Q(**{f"{key}__lt": value}) | Q(id__lt=last_id)
            )
        return queryset.filter(Q(**{f"{key}__gte": value}), Q(**{f"{key}__gt": value}) | Q(id__gt=last_id))
