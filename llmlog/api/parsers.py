"""Request body parsing for the DRF views (the ingest views read their bodies themselves)."""

import re
from typing import Any

from rest_framework import exceptions, parsers

# A lone UTF-16 surrogate (`"\ud800"` is valid JSON to Python's decoder, but no UTF-8 text, so the
# database driver fails on it) or a NUL (PostgreSQL's text refuses it).
UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


class JSONParser(parsers.JSONParser):
    """DRF's JSON parser, with what it would let through to a 500 answered as a 400: JSON nested past
    what Python's decoder can follow (RecursionError, for a 200 KB body of `[`), and strings or keys
    holding a lone surrogate or a NUL, which no query or column can take."""

    def parse(self, stream, media_type=None, parser_context=None):
        try:
            data = super().parse(stream, media_type, parser_context)
            where = unstorable_text(data, "$")
        except RecursionError:
            raise exceptions.ParseError("JSON parse error - nested too deeply to read.") from None
        if where:
            raise exceptions.ParseError(
                f"JSON parse error - {where} holds a NUL (\\u0000) or a lone surrogate (\\ud800-\\udfff), "
                "which cannot be stored or searched."
            )
        return data


def unstorable_text(value: Any, where: str) -> str | None:
    """The path of the first string or key in `value` with a NUL or a lone surrogate, else None."""
    if isinstance(value, str):
        return where if UNSTORABLE.search(value) else None
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(key, str) and UNSTORABLE.search(key):
                return f"{where} (a key)"
            found = unstorable_text(item, f"{where}.{key}")
            if found:
                return found
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found = unstorable_text(item, f"{where}[{index}]")
            if found:
                return found
    return None
