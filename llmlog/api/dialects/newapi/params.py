"""new-api's parameters: its filters, log types and keyword as a UsageQuery; a gateway key as its hashes."""

import hashlib
from datetime import timedelta
from typing import Any

from django.db.models import Case, F, Func, Q, TextField, Value, When
from django.db.models.functions import Cast, Concat
from django.db.models.lookups import StartsWith

from core.money import MONEY_DIGITS, MONEY_PLACES
from llmlog.api.dialects.common import (
    bad_input,
    int_param,
    time_param,
)
from llmlog.models import UsageStatus
from llmlog.queries import NO_STATUS, UsageQuery

DEFAULT_PAGE_SIZE = 20
SEARCH_LIMIT = 100
TOKEN_LOG_LIMIT = 100
LOG_TYPE_CONSUME = 2
LOG_TYPE_ERROR = 4
# new-api's log types -> the usage status they are; None: every record; absent from the map: no record.
LOG_TYPES: dict[int, str | None] = {
    0: None,
    LOG_TYPE_CONSUME: UsageStatus.SUCCESS,
    LOG_TYPE_ERROR: UsageStatus.FAILED,
}
KNOWN_LOG_TYPES = (0, 1, 2, 3, 4, 5)
TYPE_OF_STATUS = {UsageStatus.SUCCESS: LOG_TYPE_CONSUME, UsageStatus.FAILED: LOG_TYPE_ERROR}
# new-api's equality filters -> the UsageQuery field each sets.
EQUALITY_PARAMS = {
    "username": "username",
    "token_name": "token_name",
    "model_name": "model_name",
    "channel": "channel_id",
    "group": "group",
}


def log_query(params: Any, *, org: str) -> UsageQuery:
    """The records new-api's filter parameters name, in `org` ("" = every org)."""
    log_type = int_param(params, "type", default=0, minimum=0)
    if log_type not in KNOWN_LOG_TYPES:
        raise bad_input(
            "type", f"Unknown log type {log_type}: 1 top-up, 2 consume, 3 manage, 4 error, 5 system."
        )
    start = time_param(params, "start_timestamp", unit="s")
    end = time_param(params, "end_timestamp", unit="s")
    if start and end and end < start:
        raise bad_input("end_timestamp", "Must not be before start_timestamp.")
    equal = {field: params.get(param, "").strip() for param, field in EQUALITY_PARAMS.items()}
    return UsageQuery(
        org=org,
        start=start,
        end=end + timedelta(seconds=1) if end else None,  # new-api's end is inclusive, to the second
        status=LOG_TYPES.get(log_type, NO_STATUS),
        **{field: value for field, value in equal.items() if value},
    )


def content_prefix_terms(keyword: str) -> list[Q]:
    """The records whose log `content` (log_item) starts with `keyword`, as conditions the indexes serve.

    A successful call's content is "{model_name}: {prompt} prompt + {completion} completion tokens,
    {amount} {currency}" (or "..., not priced yet"). A keyword no longer than the model name is a prefix
    of the content exactly when it is a prefix of the model name (model_name LIKE 'k%', on the
    varchar_pattern_ops indexes); a longer one starts with the model name and ": ", so its model name is
    one of the keyword's own prefixes that ": " follows (an equality, on the model_name indexes), and the
    rest is compared with the content built in SQL. A failed call's content is its error message: the
    native search finds it (a word of the error).
    """
    succeeded = ~Q(status=UsageStatus.FAILED)
    terms = [Q(model_name__startswith=keyword) & succeeded]
    for at in range(1, len(keyword)):
        rest = keyword[at:]
        if rest == ":" or rest.startswith(": "):
            content = Concat(
                F("model_name"),
                Value(": "),
                Cast("input_tokens", TextField()),
                Value(" prompt + "),
                Cast("output_tokens", TextField()),
                Value(" completion tokens, "),
                Case(
                    When(amount__isnull=True, then=Value("not priced yet")),
                    default=Concat(
                        AmountText(F("amount")), Value(" "), F("currency"), output_field=TextField()
                    ),
                    output_field=TextField(),
                ),
                output_field=TextField(),
            )
            terms.append(Q(model_name=keyword[:at]) & succeeded & Q(StartsWith(content, keyword)))
    return terms


class AmountText(Func):
    """An amount as Python writes the Decimal the column gives back: MONEY_PLACES decimals."""

    output_field = TextField()

    def as_sql(self, compiler: Any, connection: Any, **extra: Any) -> tuple[str, list[Any]]:
        sql, params = compiler.compile(self.source_expressions[0])
        return f"printf('%.{MONEY_PLACES}f', {sql})", list(params)

    def as_postgresql(self, compiler: Any, connection: Any, **extra: Any) -> tuple[str, list[Any]]:
        sql, params = compiler.compile(self.source_expressions[0])
        return f"CAST(CAST({sql} AS numeric({MONEY_DIGITS}, {MONEY_PLACES})) AS text)", list(params)


def keyword_terms(keyword: str) -> tuple[Q, ...]:
    """What new-api's `keyword` names besides what the native search does (transno, user, org, model,
    token, a word of the error): its log type number (2 consume, 4 error) and a prefix of its content."""
    keyword = keyword.strip()
    terms: list[Q] = []
    if keyword.isascii() and keyword.isdigit() and LOG_TYPES.get(int(keyword)):
        terms.append(Q(status=LOG_TYPES[int(keyword)]))
    return (*terms, *content_prefix_terms(keyword))


def gateway_key_hashes(key: str) -> list[str]:
    """sha256 of the key as given, and with or without new-api's "sk-" prefix (its UI shows keys with
    it, its database keeps them without, and a gateway may report either)."""
    variants = {key, key.removeprefix("sk-") if key.startswith("sk-") else f"sk-{key}"}
    return sorted(hashlib.sha256(variant.encode()).hexdigest() for variant in variants)
