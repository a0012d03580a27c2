"""Who is calling, by address: the socket's peer, or behind the deployment's own reverse proxies the
address the first of them saw. One rule for every limit keyed by address (API-key failures, the admin's
login lockout, an anonymous caller's ingest rate) and for the access log."""

import ipaddress

from django.conf import settings
from django.http import HttpRequest


def client_address(request: HttpRequest) -> str:
    """REMOTE_ADDR (gunicorn's socket peer) when no proxy is trusted (LLMLOG_TRUSTED_PROXIES=0). Behind N
    trusted proxies, the N-th entry from the right of X-Forwarded-For: each proxy appends the address it
    was called from, so that entry is what the outermost proxy saw, while everything left of it is
    whatever the client wrote. A request with fewer entries, or not an address there, did not come through
    them: its peer. ""
    when there is none (a request made in process, as the test client's logins are)."""
    proxies = settings.LLMLOG_TRUSTED_PROXIES
    if proxies:
        forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "")
        hops = [hop.strip() for hop in forwarded.split(",") if hop.strip()]
        if len(hops) >= proxies and _is_address(hops[-proxies]):
            return hops[-proxies]
    return request.META.get("REMOTE_ADDR", "")


def _is_address(text: str) -> bool:
    """An IP address, as the admin's lockout stores it: anything else in that place was not written by a
    proxy, and is not taken."""
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def axes_client_address(request: HttpRequest) -> str | None:
    """client_address for django-axes (AXES_CLIENT_IP_CALLABLE), which stores it in an address column:
    None rather than "" when there is none."""
    return client_address(request) or None
