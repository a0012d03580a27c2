"""Unix timestamps as the API and the gateways send them: one rule for seconds or milliseconds."""

# A bare number at or above this is read as milliseconds: 1e12 ms is 2001-09-09, before any record, and
# 1e12 s the year 33658, past any datetime. Below it a number is seconds, up to 9999-12-31
# (253,402,300,799): the year 9999 in seconds, sent as "no end", is then seen for what it is (and refused
# where it is out of range), where a threshold of 1e11 read it as milliseconds, in 1978.
UNIX_MS_THRESHOLD = 1_000_000_000_000


def unix_seconds(number: float, *, unit: str = "auto") -> float:
    """`number` as unix seconds. `unit` is "s", "ms", or "auto": milliseconds from UNIX_MS_THRESHOLD on
    (either sign), seconds below it."""
    if unit == "ms" or (unit == "auto" and abs(number) >= UNIX_MS_THRESHOLD):
        return number / 1000
    return number
