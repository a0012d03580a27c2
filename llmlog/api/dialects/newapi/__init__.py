"""new-api's log module: the `/api/log/` family over llmlog's usage records.

As new-api documents it (seeds/new-api-log-module.txt): every answer is `{success, message, data}`;
lists take `p` (page, from 1) and `page_size` (default 20, at most 100) and answer
`{items, total, page, page_size}`; times are unix seconds; filters are `type`, `start_timestamp`,
`end_timestamp` (inclusive, to the second), `username`, `token_name`, `model_name`, `channel`, `group`.

- `GET /api/log/` every org's records (new-api's admin: a platform key or a staff session);
  `GET /api/log/self` the caller's own. new-api's "self" is the logged-in user; an llmlog API key
  belongs to an org, so "self" is the key's org (a platform key's self is every org).
- `GET /api/log/stat`, `/api/log/self/stat`: `{quota, rpm, tpm}`: quota is the amount charged in
  new-api's quota units (below), rpm and tpm count the successful calls of the last 60 s.
- `GET /api/log/search`, `/api/log/self/search?keyword=`: the newest 100 records the keyword names: its
  log type number (2, 4), a prefix of its `content`, its transno, user, org, model or token name, or a
  word of its error.
- `GET /api/log/token?key=`: the records made with a gateway key, found by its sha256 (llmlog never
  stores a key); the key itself is the credential, no API key needed, and any origin may ask (CORS).
- `DELETE /api/log/?target_timestamp=`: deletes the accounted and skipped records that started before
  that time, hot and history, in batches, and answers the count; pending and failed records are never
  deleted. Needs an owner or admin key: an org key deletes its org's records, a platform key every org's.

Log `type`: 2 (consume) is a successful call, 4 (error) a failed one; 0 or none is every record.
new-api's other types (1 top-up, 3 manage, 5 system) are not usage records: they find nothing.
`quota` is an integer in new-api's quota units: round(amount x LLMLOG_NEWAPI_QUOTA_PER_UNIT), half to
even (default 500,000 per unit of money, new-api's per US dollar), per record; /stat adds the records'
rounded quotas, so the items of a filter add up to its /stat. `id` is the record's `seq` (a number, as
new-api's); `user_id`, `token_id` and `channel_id` are the gateway's ids when they are whole numbers and
0 otherwise, with the names in `username`, `token_name` and `channel_name`. A record's `use_time` is
its duration in whole seconds, `channel_name` its provider, `ip` the caller's IP, and `other` JSON text
with the request id (transno), the time to first byte in ms (`frt`) and the token kinds new-api keeps
there.
"""
