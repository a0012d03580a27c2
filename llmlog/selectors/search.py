"""The keyword search: the records a keyword names, each term probed on its own index."""

import contextlib
import uuid
from collections.abc import Sequence

from django.db.models import Exists, Q, QuerySet

from llmlog.filters import clean_text


def usage_search(*, queryset: QuerySet, keyword: str, also: Sequence[Q] = ()) -> QuerySet:
    """The records of `queryset` that `keyword` names: equal to its id, transno, userid, username,
    userorgid, model_name or token_name, or found (case-insensitive) in its error_message; or meeting
    one of the conditions `also` (a dialect's own meanings of the keyword, e.g. new-api's log type).

    Each of these columns is indexed (error_message by trigrams, on PostgreSQL); request and response
    bodies are not searched. Order is kept from `queryset`. Raises InvalidFilter naming `keyword` when
    it holds what no query can (NUL, a lone surrogate).
    """
    keyword = clean_text(keyword, name="keyword").strip()
    if not keyword:
        return queryset.none()
    terms = [
        Q(transno=keyword),
        Q(userid=keyword),
        Q(username=keyword),
        Q(userorgid=keyword),
        Q(model_name=keyword),
        Q(token_name=keyword),
        # `<> ''` lets PostgreSQL use the partial trigram index, which leaves out records without error.
        Q(error_message__icontains=keyword) & ~Q(error_message=""),
    ]
    with contextlib.suppress(ValueError):
        terms.append(Q(id=uuid.UUID(keyword)))
    terms += also
    # Keep only the terms that match something, each probed on its own index (one query of EXISTS
    # sub-selects, evaluated once each). Without this a keyword
    # that matches nothing makes PostgreSQL walk the whole use_time index looking for the newest match
    # (seconds at a million rows), because it guesses a value of a few-valued column matches many.
    probes = {f"term_{i}": Exists(queryset.filter(term).order_by()) for i, term in enumerate(terms)}
    flags = queryset.model.objects.annotate(**probes).values(*probes).order_by().first() or {}
    found = [term for i, term in enumerate(terms) if flags.get(f"term_{i}")]
    if not found:
        return queryset.none()
    match = found[0]
    for term in found[1:]:
        match |= term
    return queryset.filter(match)
