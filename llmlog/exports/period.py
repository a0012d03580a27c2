"""The month an export is about: a half-open range [start, end) of aware times, its days in TIME_ZONE."""

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from django.conf import settings

MONTH_PATTERN = r"^\d{4}-\d{2}$"
# Years an export may name: a typo ("0202-11") is refused instead of reading an empty month, and a
# month's start and end stay inside what datetime can hold in any time zone.
FIRST_YEAR, LAST_YEAR = 2000, 2999


class InvalidPeriod(ValueError):
    """A month that cannot be exported; the message says why."""


@dataclass(frozen=True)
class ExportPeriod:
    """[start, end) as aware times, `label` what the files call it ("2026-11"), days in `zone`."""

    label: str
    start: datetime
    end: datetime
    zone: ZoneInfo

    def day_bounds(self, day: date) -> tuple[datetime, datetime]:
        """A day of the period as [start, end) in UTC: midnight to midnight in the period's zone (23 or
        25 hours on a daylight-saving change)."""
        start = datetime.combine(day, time(0), tzinfo=self.zone)
        end = datetime.combine(day + timedelta(days=1), time(0), tzinfo=self.zone)
        return start.astimezone(UTC), end.astimezone(UTC)


def month_period(text: str, *, zone: ZoneInfo | None = None) -> ExportPeriod:
    """ "YYYY-MM" as the month from its first midnight to the next month's, in `zone` (TIME_ZONE)."""
    text = (text or "").strip()
    if not re.fullmatch(MONTH_PATTERN, text):
        raise InvalidPeriod(f"{text!r} is not a month: give it as YYYY-MM, e.g. 2026-11.")
    year, month = (int(part) for part in text.split("-"))
    if not 1 <= month <= 12:
        raise InvalidPeriod(f"{text!r} is not a month: the month is 01 to 12.")
    if not FIRST_YEAR <= year <= LAST_YEAR:
        raise InvalidPeriod(f"{text!r}: the year is {FIRST_YEAR} to {LAST_YEAR}.")
    zone = zone or ZoneInfo(settings.TIME_ZONE)
    first = date(year, month, 1)
    following = date(year + month // 12, month % 12 + 1, 1)
    return ExportPeriod(
        label=text,
        start=datetime.combine(first, time(0), tzinfo=zone),
        end=datetime.combine(following, time(0), tzinfo=zone),
        zone=zone,
    )
