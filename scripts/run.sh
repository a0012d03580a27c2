#!/usr/bin/env bash
# `make run`: migrate, demo data into an empty database, then web + Celery worker + beat on :8000.
# With DATABASE_URL / REDIS_URL unset: SQLite under var/ and a broker that needs no server.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
export DJANGO_DEBUG="${DJANGO_DEBUG:-true}"
mkdir -p var

$BIN/python manage.py migrate --noinput -v0
$BIN/python manage.py collectstatic --noinput -v0
$BIN/python manage.py prepare_run --demo-rows "${DEMO_ROWS:-20000}"

$BIN/celery -A config worker --beat --loglevel INFO --concurrency 2 >var/celery.log 2>&1 &
worker=$!
echo "Celery worker + beat running (pid $worker), log in var/celery.log"

stop_worker() {
  kill -TERM "$worker" 2>/dev/null || return 0
  # A worker running beat can hang on SIGTERM (see ECOSYSTEM.md): give it 10 s, then SIGKILL.
  for _ in $(seq 10); do kill -0 "$worker" 2>/dev/null || return 0; sleep 1; done
  kill -KILL "$worker" 2>/dev/null || true
}
trap stop_worker EXIT INT TERM

$BIN/gunicorn config.wsgi --bind "${BIND:-127.0.0.1:8000}" --workers "${WEB_WORKERS:-2}" \
  --config config/gunicorn.py --graceful-timeout 5
