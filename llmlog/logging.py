"""Logs as JSON lines, each with the id of the request it belongs to; never a key or a body.

`RequestIdMiddleware` takes the caller's `X-Request-ID` (a gateway or load balancer that set one) when it
looks like an id, makes one otherwise, returns it on the response and puts it on every log line written
while the request runs, plus one access line per request (method, path without its query string, status,
duration, API key id). The path's query string is left out on purpose: new-api's `/api/log/token?key=`
carries a gateway key there.

`JsonFormatter` writes the standard fields and the caller's `extra` values that are plain scalars, so an
object (a request, a body) is never serialised into a log by accident; anything shaped like one of our
API keys or an Authorization value is masked, in case a message ever quotes one.

A small formatter on the stdlib rather than structlog: Django, DRF, Celery and gunicorn all log through
the stdlib, and this is all the structure on-call needs.
"""

import contextvars
import json
import logging
import re
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime

from django.http import HttpRequest, HttpResponse

from core.clients import client_address

REQUEST_ID: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="")
# What a caller's id may look like (uuids, ULIDs, trace ids, AWS' Root=1-...); anything else is replaced,
# so a header can never inject text into the logs.
REQUEST_ID_PATTERN = re.compile(r"[A-Za-z0-9._:=+/-]{1,128}")

access_logger = logging.getLogger("llmlog.request")

# Attributes every LogRecord has: what is left in record.__dict__ is the caller's `extra`.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}
# Never logged, whatever their value: names that carry secrets or bodies.
_SECRET_NAMES = frozenset(
    {"authorization", "api_key", "key", "raw_key", "token", "token_key", "password", "body", "ioinfo"}
)
_MASKS = (
    (re.compile(r"llk_[A-Za-z0-9_\-]{6,}"), "llk_[masked]"),  # our API keys (llmlog.models.ApiKey.PREFIX)
    (re.compile(r"(?i)\b(bearer|apikey:?)\s+[^\s,;\"']+"), r"\1 [masked]"),
)
MAX_FIELD_CHARS = 4000


def mask_secrets(text: str) -> str:
    for pattern, replacement in _MASKS:
        text = pattern.sub(replacement, text)
    return text


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, tz=UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": mask_secrets(record.getMessage())[:MAX_FIELD_CHARS],
            "request_id": REQUEST_ID.get() or _request_id_of(record),
        }
        for name, value in record.__dict__.items():
            if name in _STANDARD or name in entry or name.lower() in _SECRET_NAMES:
                continue
            if isinstance(value, str):
                entry[name] = mask_secrets(value)[:MAX_FIELD_CHARS]
            elif value is None or isinstance(value, bool | int | float):
                entry[name] = value
        if record.exc_info:
            entry["exc_info"] = mask_secrets(self.formatException(record.exc_info))
        if record.stack_info:
            entry["stack_info"] = mask_secrets(self.formatStack(record.stack_info))
        return json.dumps(entry, ensure_ascii=False, default=str)


def _request_id_of(record: logging.LogRecord) -> str | None:
    """django.request logs a 4xx after the middleware has returned, with the request in `extra`."""
    return getattr(getattr(record, "request", None), "request_id", None)


class RequestIdMiddleware:
    """First in MIDDLEWARE, so that every other middleware's log lines carry the id too."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        incoming = request.META.get("HTTP_X_REQUEST_ID", "")
        request_id = incoming if REQUEST_ID_PATTERN.fullmatch(incoming) else uuid.uuid4().hex
        request.request_id = request_id
        token = REQUEST_ID.set(request_id)
        started = time.perf_counter()
        try:
            response = self.get_response(request)
            response["X-Request-ID"] = request_id
            key = getattr(request, "auth", None)  # DRF sets it on the Django request too
            access_logger.info(
                "%s %s %s",
                request.method,
                request.path,
                response.status_code,
                extra={
                    "method": request.method,
                    "path": request.path,
                    "status": response.status_code,
                    "duration_ms": round((time.perf_counter() - started) * 1000, 2),
                    "api_key_id": getattr(key, "pk", None),
                    "remote_addr": client_address(request),
                },
            )
            return response
        finally:
            REQUEST_ID.reset(token)
