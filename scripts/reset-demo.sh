#!/usr/bin/env bash
# `make reset-demo`: forget make run's state so the next `make run` starts from an empty database with new
# demo data, a new admin password and a new API key. With DATABASE_URL set (PostgreSQL) the database is
# not dropped here: drop and recreate it yourself (see README, "Run on PostgreSQL and Redis").
set -euo pipefail
cd "$(dirname "$0")/.."
VAR="${LLMLOG_VAR_DIR:-var}"
if [ -n "${DATABASE_URL:-}" ]; then
  echo "DATABASE_URL is set: drop and recreate that database yourself (dropdb/createdb), then make run RESET=1." >&2
  exit 1
fi
rm -f "$VAR/llmlog.sqlite3" "$VAR/llmlog.sqlite3-wal" "$VAR/llmlog.sqlite3-shm" "$VAR/run-credentials.json"
rm -rf "$VAR/celery" "$VAR/cache"
echo "Removed the SQLite database, the saved login and key, the queued tasks and the cache under $VAR/."
echo "The next 'make run' loads new demo data and prints a new login and key (logs are kept)."
