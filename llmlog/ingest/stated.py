"""Who may state money: `amount`, `cost`, `ownerid` and `price` are taken from a platform key only (the
gateway's own prices). An org key that sends one is refused whole (StatedByOrgKey, a 403): its records
are priced from the price book, which also names the model's owner.

The fields are read from the raw record, before it is decoded, so the check cannot be skipped by a record
that fails to decode, and money is checked as the text it was sent as.
"""

import re

import msgspec
from django.core.exceptions import PermissionDenied

# The fields only a platform key may send (llmlog.api.auth.Caller.is_platform).
PLATFORM_ONLY_FIELDS = ("amount", "cost", "ownerid", "price")
# The money a record may send, checked as the text it was sent as (money_text_problem).
MONEY_FIELDS = ("amount", "cost", "provider_cost")
# A money value as text: ASCII digits with at most one point. No sign (not even "-0"), exponent, spaces,
# underscores or other scripts' digits, all of which Decimal() would otherwise read. Used with fullmatch.
MONEY_TEXT = re.compile(r"[0-9]+(?:\.[0-9]*)?|\.[0-9]+")


NOT_SENT = msgspec.Raw(b"")


class StatedFields(msgspec.Struct):
    """The platform-only fields of a record as sent, read before the record itself: an org key that
    states one is refused before anything is stored, and money is checked as the text it was sent as
    (Decimal would read "1e3", " 1", "1_0" and Arabic-Indic digits alike)."""

    # msgspec.Raw takes no union (`Raw | None` would refuse every value but null): absent is NOT_SENT.
    amount: msgspec.Raw = NOT_SENT
    cost: msgspec.Raw = NOT_SENT
    ownerid: msgspec.Raw = NOT_SENT
    price: msgspec.Raw = NOT_SENT
    # Not platform-only (it moves no money), but money all the same: its text is checked as theirs.
    provider_cost: msgspec.Raw = NOT_SENT

    def sent(self, name: str) -> bytes | None:
        """The field's JSON text; None when absent or null (which means absent)."""
        text = bytes(getattr(self, name))
        return None if text in (b"", b"null") else text

    def stated(self) -> list[str]:
        return [name for name in PLATFORM_ONLY_FIELDS if self.sent(name) is not None]


class StatedByOrgKey(PermissionDenied):
    """An org key sent amount, cost, ownerid or price: the whole request is refused (a 403)."""

    def __init__(self, fields: list[str]) -> None:
        names = ", ".join(fields)
        super().__init__(
            f"Only a platform key may state {names}: an org key's records are priced from the price "
            "book, which also names the model's owner. Send the record without "
            f"{'it' if len(fields) == 1 else 'them'}."
        )
        self.fields = fields


def refuse_stated_by_org(*, org: str, stated: list[str]) -> None:
    """Raise StatedByOrgKey when an org key (org != "") stated any platform-only field."""
    if org and stated:
        raise StatedByOrgKey(sorted(set(stated), key=PLATFORM_ONLY_FIELDS.index))


def money_text_problem(raw: bytes) -> str | None:
    """Why a JSON money value, as sent, is not one: a string must be ASCII digits with at most one point;
    a number is read as JSON defines it (an exponent is how JSON libraries write 0.00001), never signed.
    None when it is fine, or not a string or number at all (the record's own decoding names that)."""
    if raw[:1] == b'"':
        try:
            text = msgspec.json.decode(raw, type=str)
        except (msgspec.DecodeError, msgspec.ValidationError):
            return "Expected a decimal string."
        if MONEY_TEXT.fullmatch(text) is None:
            return (
                "Expected ASCII digits with at most one decimal point (no sign, exponent, spaces, "
                f"underscores or other digits), got {text[:40]!r}."
            )
    elif raw[:1] == b"-":
        return "Expected a non-negative amount, without a sign (not even -0)."
    return None


def stated_fields(raw: bytes) -> StatedFields | None:
    """The platform-only fields of a raw record; None when it is not a JSON object (decoding the record
    then says why). Any object is read, whatever its fields hold: the check cannot be skipped."""
    try:
        return msgspec.json.decode(raw, type=StatedFields)
    except (msgspec.DecodeError, RecursionError, UnicodeDecodeError):  # ValidationError is a DecodeError
        return None
