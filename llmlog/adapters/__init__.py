"""Gateway adapters: records in the shape a gateway already emits, mapped onto the native record.

Each adapter only maps (LiteLLM's StandardLoggingPayload in `litellm`, OpenTelemetry GenAI spans in
`otlp`); validation, pricing, idempotency on `transno` and storage are the native ingest's
(`llmlog.ingest.usage_ingest_records`), reached through `common.ingest_gateway_records`.
"""
