#!/usr/bin/env bash
# `make run`: migrate, demo data into an empty database, then web + Celery worker + beat on :8000.
# With DATABASE_URL / REDIS_URL unset: SQLite under var/ and a broker that needs no server.
# The admin login and API key are kept in var/run-credentials.json across restarts; RESET=1 makes new ones.
# Ctrl-C stops everything. Logs are JSON lines: the web's on this terminal, the worker's appended to
# var/celery.log (kept across restarts).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
export DJANGO_DEBUG="${DJANGO_DEBUG:-true}"
VAR="${LLMLOG_VAR_DIR:-var}"
mkdir -p "$VAR"
BIND="${BIND:-127.0.0.1:8000}"

reset_flag=()
case "${RESET:-}" in 1 | true | yes) reset_flag=(--reset) ;; esac

$BIN/python manage.py migrate --noinput -v0
$BIN/python manage.py collectstatic --noinput -v0
$BIN/python manage.py prepare_run --demo-rows "${DEMO_ROWS:-20000}" --base-url "http://$BIND" "${reset_flag[@]}"

printf '{"time": "%s", "level": "INFO", "logger": "make run", "message": "worker starting"}\n' "$(date -u +%FT%TZ)" >>"$VAR/celery.log"
$BIN/celery -A config --quiet worker --beat --loglevel INFO --concurrency 2 >>"$VAR/celery.log" 2>&1 &
worker=$!
echo "Celery worker + beat running (pid $worker), log in $VAR/celery.log"

stop_worker() {
  kill -TERM "$worker" 2>/dev/null || return 0
  # A worker running beat can hang on SIGTERM (see ECOSYSTEM.md): give it 10 s, then SIGKILL.
  for _ in $(seq 10); do kill -0 "$worker" 2>/dev/null || return 0; sleep 1; done
  kill -KILL "$worker" 2>/dev/null || true
}
trap stop_worker EXIT INT TERM

# The worker model is config/gunicorn.py's, as in deploy/ and the benchmarks: WEB_WORKERS processes
# (default 2) of WEB_THREADS threads (default 8), so a slow read never holds up ingest.
$BIN/gunicorn config.wsgi --bind "$BIND" --config config/gunicorn.py --graceful-timeout 5
