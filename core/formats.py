"""One way to show money and time on every admin page and the dashboard, in both apps.

Money: thousands separated, always MONEY_PLACES (5) decimals, the ledger's own scale, so nothing shown is
rounded and every column lines up right-aligned; a sum (a balance, a total, a dashboard figure) carries its
currency. Time: 24 h in the operator's time zone, with the zone's name: "2026-12-02 17:23:03 UTC".
"""

from datetime import datetime
from decimal import Decimal

from django.utils import timezone
from django.utils.html import format_html
from django.utils.safestring import SafeString

from core.money import MONEY_PLACES

TIME_FORMAT = "%Y-%m-%d %H:%M:%S %Z"
DEFAULT_CURRENCY = "USD"


def money_text(value: Decimal | int | None, *, currency: str = "") -> str:
    if value is None:
        return "-"
    text = f"{Decimal(value):,.{MONEY_PLACES}f}"
    return f"{text} {currency}" if currency else text


def money_html(value: Decimal | int | None, *, currency: str = "") -> SafeString:
    """For list_display: right-aligned, never wrapped (class "money", llmlog/static/llmlog/admin.css)."""
    return format_html('<span class="money">{}</span>', money_text(value, currency=currency))


def time_text(value: datetime | None) -> str:
    if value is None:
        return "-"
    return timezone.localtime(value).strftime(TIME_FORMAT) if timezone.is_aware(value) else str(value)
