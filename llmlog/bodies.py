"""Bounds on an ingest request body, checked while it is split and before anything is decoded or written.

A body within its byte limit can still cost a worker gigabytes: 16 MB of `{},` is 5 million objects,
and every decoder (msgspec's, protobuf's) allocates each of them before a caller can count. So the
records are counted while the body is split, and the split stops at the first record past the cap;
and the JSON containers of a body are counted in its text before it is decoded at all.
"""

import re
import threading

import msgspec

# What a JSON body may hold in all, per record it may carry: a LiteLLM record or an OTLP span has a few
# dozen objects and arrays (attributes, usage details, messages). Counted in the text, brackets inside
# strings included, so the bound is loose for real bodies and tight for hostile ones: a body of tiny
# containers costs the decoder less per bracket than a real record does.
CONTAINERS_PER_RECORD = 100
# Records at the smallest cap still get room for one big record (a long conversation in `messages`).
MIN_CONTAINERS = 100_000


def json_error(exc: Exception) -> str:
    """msgspec's message for malformed JSON, saying so when the cause is a lone UTF-16 surrogate
    (`"\\ud800"`: valid escapes, but no text) or bytes that are not UTF-8."""
    if isinstance(exc, UnicodeDecodeError):
        return f"Malformed JSON: not valid UTF-8 (byte {exc.start} of the text)."
    message = str(exc)
    if "surrogate" in message or "hex escape" in message:
        return f"Malformed JSON: {message}; a lone UTF-16 surrogate (\\ud800-\\udfff) is not text."
    return f"Malformed JSON: {message}"


class TooBig(Exception):
    """A body past one of the bounds of a request: a 413, and nothing of it is stored."""

    def as_dict(self) -> dict[str, object]:
        return {"detail": str(self)}


class TooManyRecords(TooBig):
    """More records (or spans) in one request than the cap."""

    def __init__(self, *, limit: int, setting: str, what: str = "records") -> None:
        self.limit, self.setting, self.what = limit, setting, what
        super().__init__(
            f"At most {limit} {what} per request ({setting} = {limit}); this request has more. "
            "Split it into smaller requests."
        )

    def as_dict(self) -> dict[str, object]:
        return {"detail": str(self), "setting": self.setting, "max_records": self.limit}


class TooComplex(TooBig):
    """A body with more JSON objects and arrays (or protobuf messages) than its records can need."""


def check_containers(body: bytes, *, records: int) -> None:
    """Refuse a JSON body with more objects and arrays than `records` records can need (TooComplex)."""
    limit = max(MIN_CONTAINERS, records * CONTAINERS_PER_RECORD)
    if len(body) <= limit:  # cannot hold more brackets than bytes
        return
    found = body.count(b"{") + body.count(b"[")
    if found > limit:
        raise TooComplex(
            f"The body holds {found} JSON objects and arrays; at most {limit} are read in one request "
            f"({CONTAINERS_PER_RECORD} per record at the cap). Send fewer or flatter records."
        )


_count = threading.local()


class _Counted(msgspec.Struct, gc=False):
    """One object of a JSON array, read without its fields (msgspec skips them without allocating)."""

    def __post_init__(self) -> None:
        _count.seen += 1
        if _count.seen > _count.limit:
            raise _Past


class _Past(Exception):
    """Raised from inside msgspec's decoder to stop it at the first record past the cap."""


_counting = msgspec.json.Decoder(list[_Counted])
_splitting = msgspec.json.Decoder(list[msgspec.Raw])


def json_array_items(body: bytes, *, limit: int, setting: str) -> list[msgspec.Raw]:
    """The items of a JSON array, each as its raw JSON; TooManyRecords past `limit` items.

    A first pass counts the objects and stops at the first past the cap, holding nothing; only then
    are the items split out (a Raw per item: about 50 bytes, so 5 million of them would be 250 MB).
    An item that is not an object stops the count: the split goes on only when the body cannot hold
    more than `limit` items (it has fewer commas), so such an item is reported as that item's error.
    Malformed JSON raises msgspec.DecodeError, and RecursionError past the decoder's depth.
    """
    _count.seen, _count.limit = 0, limit
    try:
        _counting.decode(body)
    except _Past:
        raise TooManyRecords(limit=limit, setting=setting) from None
    except msgspec.ValidationError:
        if body.count(b",") + 1 > limit:
            raise TooManyRecords(limit=limit, setting=setting) from None
    return _splitting.decode(body)


# One NDJSON line: from its first non-blank character to its end. The regex engine skips blank lines
# in C, so a body of 16 MB of newlines costs a scan, not 16 million loop turns.
_LINE = re.compile(rb"[^\s][^\n]*")


def ndjson_lines(body: bytes, *, limit: int, setting: str) -> list[bytes]:
    """The non-blank lines of an NDJSON body; TooManyRecords at the first line past `limit`."""
    lines = []
    for match in _LINE.finditer(body):
        if len(lines) == limit:
            raise TooManyRecords(limit=limit, setting=setting)
        lines.append(match.group().rstrip())
    return lines
