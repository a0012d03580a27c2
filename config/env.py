"""Typed readers for the environment: a bad value stops start-up with a message naming the variable."""

import os

from django.core.exceptions import ImproperlyConfigured

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def env_str(name: str, default: str | None = None) -> str | None:
    return os.environ.get(name, default)


def env_bool(name: str, default: bool = False) -> bool:
    raw = os.environ.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name} must be a boolean (true/false/1/0), got {raw!r}")


def env_int(name: str, default: int | None = None, *, minimum: int | None = None) -> int | None:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be an integer, got {raw!r}") from None
    if minimum is not None and value < minimum:
        raise ImproperlyConfigured(f"{name} must be at least {minimum}, got {value}")
    return value


def env_list(name: str, default: list[str]) -> list[str]:
    raw = os.environ.get(name)
    if raw is None:
        return default
    return [item.strip() for item in raw.split(",") if item.strip()]


_PERIODS = {"s": 1, "sec": 1, "min": 60, "minute": 60, "h": 3600, "hour": 3600, "d": 86400, "day": 86400}


def env_rate(name: str, default: str) -> tuple[int, int] | None:
    """A rate like "6000/min" (s, min, hour, day) as (requests, seconds); "off" turns it off (None)."""
    raw = os.environ.get(name, default).strip().lower()
    if raw in ("off", "none", "0"):
        return None
    count, _, period = raw.partition("/")
    try:
        requests = int(count)
    except ValueError:
        requests = 0
    if requests < 1 or period not in _PERIODS:
        raise ImproperlyConfigured(
            f'{name} must look like "6000/min" (per s, min, hour, day) or "off", got {raw!r}'
        )
    return requests, _PERIODS[period]
