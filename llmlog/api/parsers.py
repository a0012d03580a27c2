"""Request body parsing for the DRF views (the ingest views read their bodies themselves)."""

from rest_framework import exceptions, parsers


class JSONParser(parsers.JSONParser):
    """DRF's JSON parser, with JSON nested past what Python's decoder can follow answered as a 400
    (the decoder raises RecursionError, which DRF does not catch: a 500 for a 200 KB body of `[`)."""

    def parse(self, stream, media_type=None, parser_context=None):
        try:
            return super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise exceptions.ParseError("JSON parse error - nested too deeply to read.") from None
