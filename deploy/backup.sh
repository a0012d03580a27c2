#!/usr/bin/env bash
# A backup of llmlog's database: pg_dump's custom format (compressed; pg_restore restores all of it or one
# table), one file per run, in LLMLOG_BACKUP_DIR; dumps older than LLMLOG_BACKUP_KEEP_DAYS are removed.
# Reads DATABASE_URL (PostgreSQL). Prints the file it wrote.
#   restore into an empty database:  pg_restore --no-owner --dbname "$DATABASE_URL" <file>
set -euo pipefail
: "${DATABASE_URL:?DATABASE_URL is not set (see /etc/llmlog/llmlog.env)}"
dir="${LLMLOG_BACKUP_DIR:-/var/backups/llmlog}"
keep="${LLMLOG_BACKUP_KEEP_DAYS:-14}"
case "$DATABASE_URL" in
  postgres://* | postgresql://*) ;;
  *) echo "backup.sh backs up PostgreSQL; DATABASE_URL is not a postgres:// URL" >&2; exit 2 ;;
esac
mkdir -p "$dir"
file="$dir/llmlog-$(date -u +%Y%m%dT%H%M%SZ).dump"
# Written under a temporary name and renamed when complete: a cut-short run never looks like a backup.
pg_dump --format=custom --no-owner --file "$file.partial" "$DATABASE_URL"
mv "$file.partial" "$file"
find "$dir" -maxdepth 1 -name 'llmlog-*.dump' -mtime "+$keep" -delete
echo "$file"
