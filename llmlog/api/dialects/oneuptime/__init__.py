"""OneUptime's LLM Log API: `get-list`, `get-item` and `count` over llmlog's usage records.

Paths, body and answers as OneUptime documents them (seeds/oneuptime-llm-log-api.txt):

- `POST|GET /api/llm-log/get-list?skip=0&limit=10` with `{select, query, sort}` →
  `{count, limit, skip, data: [...]}`; limit defaults to 10 and is at most 100.
- `POST|GET /api/llm-log/{id}/get-item` with `{select}` → the record.
- `POST /api/llm-log/count` with `{query}` → `{"count": n}`.

A GET carries `select`, `query` and `sort` as JSON in query parameters of those names. As in OneUptime,
a record answers `_id` plus the fields `select` names. OneUptime's names map onto llmlog's columns:
a project is an org (`projectId` = `userorgid`), an LLM provider is a gateway channel
(`llmProviderId` = `channel_id`, `llmProviderName` = `provider`, `llmType` = `provider_type`),
`costInUSDCents` is `amount` × 100 (what the project was charged), `wasBilled` means posted to the
ledger (`accounting_status` = accounted), `status` is `Success` or `Error`, `durationMs` is
`finish_seconds` × 1000, `requestPrompt` / `responsePreview` are the kept request and response, and
`incidentId`, `alertId`, `scheduledMaintenanceId` are the gateway's metadata keys of those names.
`createdAt` and `requestStartedAt` are both the call's start (`use_time`): a record comes into being
when the call is made, and `use_time` is what llmlog indexes and dates by (the ingest moment,
`created_at`, lags it by the gateway's batching); `updatedAt` is when the record was last changed
(accounted, or else ingested). Dates are answered as ISO 8601 strings.

`query` takes a value (equality), null (is empty), or one of OneUptime's operators:
`{"_type": "EqualTo"|"NotEqual"|"GreaterThan"|"GreaterThanOrEqual"|"LessThan"|"LessThanOrEqual",
"value": v}`, `{"_type": "InBetween", "startValue": a, "endValue": b}`, `{"_type": "Includes",
"value": [..]}`, `{"_type": "Search", "value": text}`, `{"_type": "IsNull"}`, `{"_type": "NotNull"}`.
`sort` maps fields to 1 / -1 (or "ASC" / "DESC"); ties are broken by `_id`. An unknown field in
`select`, `query` or `sort` is a 400 naming it.
"""
