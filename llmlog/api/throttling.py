"""Ingest throttled per API key: a clear 429 with Retry-After past the key's rate.

The rule: an org key (and a staff session) is limited to LLMLOG_INGEST_RATE, 60000/min by default; a
platform key is not limited at all unless LLMLOG_PLATFORM_INGEST_RATE is set. A platform key is the
gateway's own: it reports every LLM call of every org, and a gateway that does not retry a 429 loses the
record (a load test under `make run` lost a third of its records to the old 6000/min default). An org
key's limit is there against a runaway client, so it sits above what a real gateway sends (1,000
requests/s is thousands of LLM calls in flight) and above what one 2-core install ingests one record at
a time: it refuses a loop, never a busy gateway.

Set once for every DRF view (REST_FRAMEWORK["DEFAULT_THROTTLE_CLASSES"]), it counts only the requests
whose view requires the `ingest` scope (the native POST and the gateway adapters), so reads are never
throttled and a new ingest endpoint is covered by declaring its scope, as it must anyway.

A fixed window counted in the shared cache (Redis in production): one round trip per ingest request, a
Lua INCR that sets the key's expiry on its first count, where DRF's SimpleRateThrottle reads and rewrites
the list of every request's timestamp in the window (6000 of them at the default rate) in two. A fixed
window lets a key burst up to twice the rate across a window boundary; for a guard against runaway
gateways, not a billing rule, that is the right trade for one round trip. The redis client is kept per
process: building one per call, as Django's cache does, costs more than the round trip itself.

The limit fails open: when the cache is unreachable, ingest goes on unthrottled (a ledger keeps records;
it does not drop them because its rate limiter is down) and the failure is logged once per back-off.

Key guessing (LLMLOG_AUTH_FAILURE_RATE): API-key failures (unknown or revoked key) are counted per client
address (core.clients: behind the deployment's proxies, the address they saw) in the same kind of window. Past
the limit, every request from that address that carries a key gets a 429 with Retry-After before its key is
even looked up, until the window ends: a guesser learns nothing more, and the database sees no more of its
lookups. A clean client pays nothing: the cache is read only for an address this process has seen fail in the
window. The admin login is django-axes' (settings AXES_*); its lockout answer is `admin_lockout_response`.
"""

import logging
import time
import weakref

from django.conf import settings
from django.core.cache import caches
from django.core.cache.backends.redis import RedisCache
from django.http import HttpRequest, HttpResponse
from rest_framework import exceptions
from rest_framework.throttling import BaseThrottle

from core.clients import client_address
from llmlog.models import ApiKey

logger = logging.getLogger(__name__)

# After a cache failure, this process skips the limit for this long instead of paying a connection
# timeout on every ingest request.
CACHE_BACKOFF_SECONDS = 10.0
_cache_down_until = 0.0

PERIOD_NAMES = {1: "s", 60: "min", 3600: "hour", 86400: "day"}

# Atomic: the count and its expiry are set together, so no crash leaves a window's key behind forever.
INCR_WITH_EXPIRY = """
local count = redis.call('INCR', KEYS[1])
if count == 1 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
return count
"""
_scripts: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # cache backend -> registered script


def required_scope(request, view) -> str | None:
    """The scope this request needs: the view's `required_scopes` entry for its action or HTTP method.
    (Here, below llmlog.api.auth, which checks it: the authenticator counts key failures with this
    module.)"""
    return view.required_scopes.get(getattr(view, "action", None) or request.method.lower())


class IngestRateThrottle(BaseThrottle):
    scope = "ingest"

    def allow_request(self, request, view) -> bool:
        if not hasattr(view, "required_scopes") or required_scope(request, view) != self.scope:
            return True
        platform = isinstance(request.auth, ApiKey) and request.auth.is_platform
        setting = "LLMLOG_PLATFORM_INGEST_RATE" if platform else "LLMLOG_INGEST_RATE"
        rate = getattr(settings, setting)
        if rate is None:
            return True
        limit, period = rate
        now = time.time()
        window = int(now // period)
        count = _count(f"throttle:{self.scope}:{self._ident(request)}:{window}", timeout=period + 1)
        if count is None or count <= limit:
            return True
        wait = (window + 1) * period - now
        per = PERIOD_NAMES.get(period, f"{period}s")
        raise exceptions.Throttled(
            wait=wait,
            detail=(
                f"This API key sent more than {limit} ingest requests per {per} ({setting}); "
                f"retry in {max(1, round(wait))} s."
            ),
        )

    @staticmethod
    def _ident(request) -> str:
        if isinstance(request.auth, ApiKey):
            return f"key:{request.auth.pk}"
        user = getattr(request, "user", None)
        if user is not None and getattr(user, "pk", None) is not None:
            return f"user:{user.pk}"  # a staff session
        return f"addr:{_address(request)}"


def _count(key: str, *, timeout: int) -> int | None:
    """Add one to `key` and return the new count; None when the cache cannot be reached."""
    global _cache_down_until
    if time.monotonic() < _cache_down_until:
        return None
    cache = caches["default"]
    try:
        if isinstance(cache, RedisCache):
            script = _scripts.get(cache._cache)
            if script is None:
                client = cache._cache.get_client(write=True)
                script = _scripts[cache._cache] = client.register_script(INCR_WITH_EXPIRY)
            return script(keys=[cache.make_and_validate_key(key)], args=[timeout])
        # Other caches (the file cache of a single machine): add-then-incr; a lost race under-counts,
        # which errs toward letting a record in.
        try:
            return cache.incr(key)
        except ValueError:
            return 1 if cache.add(key, 1, timeout) else cache.incr(key)
    except Exception:
        _cache_down_until = time.monotonic() + CACHE_BACKOFF_SECONDS
        logger.warning(
            "ingest rate limit skipped for %.0f s: the cache is unreachable",
            CACHE_BACKOFF_SECONDS,
            exc_info=True,
        )
        return None


# --- API-key failures per client address ------------------------------------------------------------

# Addresses this process saw fail, until the end of their window (monotonic seconds): only those pay a
# cache read before their key is looked up. Bounded: a flood of addresses clears it (each then only
# needs one more failure to be marked again).
_suspects: dict[str, float] = {}
_SUSPECTS_MAX = 10_000


def _address(request) -> str:
    """The caller's address as a cache key: "unknown" for a request with none."""
    return client_address(request) or "unknown"


def _failure_window(now: float) -> tuple[int, int, int]:
    limit, period = settings.LLMLOG_AUTH_FAILURE_RATE
    return limit, period, int(now // period)


def auth_failures_check(request) -> None:
    """Throttled (a 429 with Retry-After) when the caller's address is past its key failures."""
    if settings.LLMLOG_AUTH_FAILURE_RATE is None:
        return
    address = _address(request)
    if _suspects.get(address, 0.0) < time.monotonic():
        return
    now = time.time()
    limit, period, window = _failure_window(now)
    try:
        count = caches["default"].get(_failure_key(address, window))
    except Exception:
        return  # fails open, as the ingest limit does (its _count logs an unreachable cache)
    if count is None or count < limit:  # after `limit` failures, the next request is refused
        return
    wait = (window + 1) * period - now
    raise exceptions.Throttled(
        wait=wait,
        detail=(
            f"{limit} requests with an unknown or revoked API key came from this address in one "
            f"{PERIOD_NAMES.get(period, f'{period}s')} (LLMLOG_AUTH_FAILURE_RATE); retry in "
            f"{max(1, round(wait))} s."
        ),
    )


def auth_failure_count(request) -> None:
    """Count one API-key failure against the caller's address."""
    if settings.LLMLOG_AUTH_FAILURE_RATE is None:
        return
    address = _address(request)
    now = time.time()
    _limit, period, window = _failure_window(now)
    if len(_suspects) >= _SUSPECTS_MAX:
        _suspects.clear()
    _suspects[address] = time.monotonic() + (window + 1) * period - now
    _count(_failure_key(address, window), timeout=period + 1)


def _failure_key(address: str, window: int) -> str:
    return f"throttle:auth-failures:{address}:{window}"


def admin_lockout_response(request: HttpRequest, original_response=None, credentials=None) -> HttpResponse:
    """django-axes' answer to a locked-out admin login (AXES_LOCKOUT_CALLABLE): a 429 that says when to
    come back, in Retry-After and in words."""
    seconds = int(settings.AXES_COOLOFF_TIME.total_seconds())
    response = HttpResponse(
        f"Too many failed logins from this address: try again in {max(1, seconds // 60)} minutes.\n",
        status=429,
        content_type="text/plain; charset=utf-8",
    )
    response["Retry-After"] = str(seconds)
    return response
