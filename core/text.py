"""The one rule for text that must reach a query: the API's filters, the admin's filters and search."""

import re

# A lone (unpaired) UTF-16 surrogate: JSON's "\ud800" decodes to one, and no database can store it.
_SURROGATE = re.compile(r"[\ud800-\udfff]")


def text_problem(value: str) -> str | None:
    """Why `value` cannot reach a query as text (None: it can). PostgreSQL text holds no NUL, and a
    lone surrogate is not text in any encoding a driver can send: both would fail in the database."""
    if "\x00" in value:
        return "Must not contain NUL characters."
    if _SURROGATE.search(value):
        return "Must be valid Unicode text (a lone surrogate is not)."
    return None
