"""Unix timestamps as the API and the gateways send them: one rule for seconds or milliseconds."""

# A bare number at or above this is read as milliseconds (1e11 seconds is the year 5138).
UNIX_MS_THRESHOLD = 100_000_000_000


def unix_seconds(number: float, *, unit: str = "auto") -> float:
    """`number` as unix seconds. `unit` is "s", "ms", or "auto": milliseconds from UNIX_MS_THRESHOLD on
    (either sign), seconds below it."""
    if unit == "ms" or (unit == "auto" and abs(number) >= UNIX_MS_THRESHOLD):
        return number / 1000
    return number
