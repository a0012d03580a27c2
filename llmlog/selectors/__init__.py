"""Reads of usage records: lists, counts, totals, search and stats, over hot and history alike.

A read is described by a `UsageQuery` (llmlog.queries): which records, in what order. Every read starts
from `usage_records(org=...)` (the `llmusage_all` view: UNION ALL of `llmusage` and
`llmusage_history`), so a time range answers the same before and after the nightly move. `org` is the
caller's org: "" means every org (a platform key), anything else scopes every query to that org.

Split by job, each module importing the one it stands on:
- `records`: the read model, the records a query names, a page of them, the facets' sample;
- `rows`: records as plain {attname: value} rows (get-item and pages, read without model instances);
- `search`: the keyword search;
- `sums`: the sums of rows and of buckets, and how they add;
- `rollup_reads`: which part of a query the hourly rollups answer (whole closed, built, unmarked hours);
- `totals`: counts and totals (`usage_count`, `usage_total`), from the rollups whenever they can answer;
- `stats`: stats, breakdowns and rates.

Money is returned as Decimal and tokens as int; callers (views, dialects) shape them for their clients.
"""
