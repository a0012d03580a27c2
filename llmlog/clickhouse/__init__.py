"""ClickHouse as the analytics store (optional: CLICKHOUSE_URL). PostgreSQL stays the system of record.

History (`llmusage_history`, records of past days already accounted) is mirrored into a ClickHouse table
of the same name and columns, and stats, counts, totals and long pages over history read it there; the
hot table, the ledger, accounts and holds never leave PostgreSQL. The hourly rollups (`llmusage_rollup`)
are mirrored too, for BI tools that read ClickHouse directly; llmlog does not read them there. With
CLICKHOUSE_URL unset nothing here runs and the driver is never imported.

Split by job:
- `client`: the connection (clickhouse-driver, native protocol) and its errors;
- `schema`: the tables, their columns derived from the models, values as ClickHouse takes them, the load;
- `mirror`: what ClickHouse holds and up to when (`synced_through`), the sync after each nightly move,
  the backfill, and the purges' deletes;
- `rollup_mirror`: the rollups' days compared with PostgreSQL's at each sync, those that differ swapped in;
- `reads`: whether ClickHouse can answer a UsageQuery, and the answers (history part from ClickHouse,
  the rest from PostgreSQL, added exactly).
"""
