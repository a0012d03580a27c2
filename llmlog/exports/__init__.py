"""Billing exports of a month of usage (issue 20): the FOCUS 1.2 CSV a finance tool reads, and every
column of every record as Parquet or JSON Lines with a manifest.

- `period`: which month, as a half-open range of aware times in TIME_ZONE (`ExportPeriod`);
- `focus`: the FOCUS rows (one per org, model and day of the ledger's charges) and their CSV lines;
- `columns`: the usage record's columns as export columns (Arrow type, JSON form), read from the model;
- `records`: reading a month of records in bounded batches, writing Parquet or JSONL, the manifest.

Each streams: memory stays flat whatever the month's size.
"""
