"""Ingest: the gateway's records in, validated, priced, stored once.

Split by job, each module a thin layer over the one below it:

- `wire`: one record as a gateway sends it (msgspec's `UsageIn`), the request body split into records,
  decoding, and msgspec's messages mapped to errors keyed by field;
- `stated`: who may state money (a platform key only), read from the raw record before it is decoded;
- `rules` (with `tokens`): the design's rules for one decoded record, which make the row that is stored;
- `storage`: COPY, the prepared single-row INSERT, and the look-up of transnos already stored;
- `service`: `usage_ingest` and `usage_ingest_records`, which put these together.

Pricing is llmlog.pricing's, the request for a posting run llmlog.tasks'. Callers import what they use
from the module that owns it: this package re-exports nothing.
"""
