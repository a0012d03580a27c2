"""Settings, from environment variables only (see README "Configuration")."""

from datetime import timedelta
from decimal import Decimal, InvalidOperation
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

from config.beat import beat_schedule
from config.databases import databases
from config.env import env_bool, env_int, env_list, env_rate, env_str

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(env_str("LLMLOG_VAR_DIR", str(BASE_DIR / "var")))
VAR_DIR.mkdir(parents=True, exist_ok=True)

DEBUG = env_bool("DJANGO_DEBUG", False)
SECRET_KEY = env_str("DJANGO_SECRET_KEY")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured("DJANGO_SECRET_KEY must be set when DJANGO_DEBUG is off")
    SECRET_KEY = "insecure-development-key-never-use-in-production"
ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]", "testserver"])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_celery_beat",
    "rangefilter",  # the admin's from-to date filter (django-admin-rangefilter)
    "axes",  # failed admin logins, throttled per client address (django-axes)
    "accounting",
    "llmlog",
]

MIDDLEWARE = [
    # First: every later middleware's log lines carry the request id; the access line times it all.
    "llmlog.logging.RequestIdMiddleware",
    "llmlog.metrics.RequestMetricsMiddleware",  # second: its latency covers every other middleware
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last, as django-axes asks: it turns a locked-out login into its lockout answer.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]


DATABASES = databases(VAR_DIR)
LLMLOG_REPLICA_ALIASES = [alias for alias in DATABASES if alias != "default"]
LLMLOG_REPLICA_MAX_LAG_SECONDS = env_int("LLMLOG_REPLICA_MAX_LAG_SECONDS", 5, minimum=0)

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# django-axes first: it refuses a locked-out address before any password is checked.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = env_str("TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True
# One date and time format on every admin page: 24 h with the zone (config/formats/en/formats.py).
FORMAT_MODULE_PATH = ["config.formats"]

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
STATIC_ROOT.mkdir(exist_ok=True)  # whitenoise warns on every request when it is missing
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
WHITENOISE_USE_FINDERS = DEBUG

# The largest request body accepted: 1000 records with their request/response text fit well inside.
DATA_UPLOAD_MAX_MEMORY_SIZE = env_int("LLMLOG_MAX_BODY_BYTES", 8 * 1024 * 1024, minimum=1024)

# JSON lines with the request id (llmlog.logging); never a key or a body.
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"json": {"()": "llmlog.logging.JsonFormatter"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "json"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    "loggers": {
        # Its DEBUG lines are every SQL statement with its parameters: ioinfo bodies, metadata, key
        # hashes. Kept at INFO even when LOG_LEVEL=DEBUG.
        "django.db.backends": {"level": "INFO"},
        # Django's default config gives these loggers plain-text handlers of their own (the `django`
        # one under DEBUG): every 4xx/5xx was printed twice, once as text. Only the root's JSON handler.
        "django": {"handlers": [], "level": "INFO", "propagate": True},
        "django.server": {"handlers": [], "level": "INFO", "propagate": True},
        # django-axes says INFO on every login (attempts reset) and failure; its lockouts are WARNINGs.
        "axes": {"level": "WARNING"},
    },
}

# --- REST API -----------------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "llmlog.api.auth.ApiKeyAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "DEFAULT_PAGINATION_CLASS": "llmlog.api.pagination.PagePagination",
    # A JSON API: bodies are JSON (the ingest views read theirs raw), so the schema promises only JSON.
    "DEFAULT_PARSER_CLASSES": ["llmlog.api.parsers.JSONParser"],
    "DEFAULT_RENDERER_CLASSES": [
        "llmlog.api.renderers.JSONRenderer",  # msgspec: DRF's encoding, several times faster
        "rest_framework.renderers.BrowsableAPIRenderer",
    ],
    "DEFAULT_CONTENT_NEGOTIATION_CLASS": "llmlog.api.renderers.ContentNegotiation",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "llmlog.api.errors.exception_handler",
    "UNAUTHENTICATED_USER": None,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "llmlog API",
    "DESCRIPTION": "The usage ledger behind an LLM gateway.",
    "VERSION": "0.1.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # Served from our own static files: no asset is loaded from the internet.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # Every operation documents the errors it can answer (400/401/403/404/429): llmlog.api.schema.
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "llmlog.api.schema.document_error_responses",
    ],
    # Several models have a `kind` or `status`: name their enums after the model, not a hash.
    "ENUM_NAME_OVERRIDES": {
        "AccountKindEnum": "accounting.models.Account.Kind",
        "CreatableAccountKindEnum": "accounting.models.Account.CREATABLE_KIND_CHOICES",
        "AccountStatusEnum": "accounting.models.Account.Status",
        "AccountingFailureStatusEnum": "accounting.models.AccountingFailure.Status",
        "UsageStatusEnum": "llmlog.models.UsageStatus",
    },
}

# --- llmlog -------------------------------------------------------------------------------------
LLMLOG_IO_LIMIT = env_int("LLMLOG_IO_LIMIT", 4096, minimum=0)
# How long a process trusts an API key it looked up (a revocation elsewhere takes this long to apply).
LLMLOG_API_KEY_CACHE_SECONDS = env_int("LLMLOG_API_KEY_CACHE_SECONDS", 5, minimum=0)
LLMLOG_BACKUP_HOUR = env_int("LLMLOG_BACKUP_HOUR", 1, minimum=0)
if LLMLOG_BACKUP_HOUR > 23:
    raise ImproperlyConfigured(f"LLMLOG_BACKUP_HOUR must be between 0 and 23, got {LLMLOG_BACKUP_HOUR}")
LLMLOG_HISTORY_RETENTION_DAYS = env_int("LLMLOG_HISTORY_RETENTION_DAYS", None, minimum=1)
# Provider cost drift (/api/llmusage/cost-drift/, the dashboard): a record whose reported cost differs
# from the computed one by more than this percent of the computed one is over (0 to 10000, 2 places).
try:
    LLMLOG_COST_DRIFT_ALERT = Decimal(env_str("LLMLOG_COST_DRIFT_ALERT", "10").strip())
except InvalidOperation:
    LLMLOG_COST_DRIFT_ALERT = None
if (
    LLMLOG_COST_DRIFT_ALERT is None
    or not LLMLOG_COST_DRIFT_ALERT.is_finite()
    or not 0 <= LLMLOG_COST_DRIFT_ALERT <= 10_000
    or LLMLOG_COST_DRIFT_ALERT.as_tuple().exponent < -2
):
    raise ImproperlyConfigured(
        "LLMLOG_COST_DRIFT_ALERT must be a percent from 0 to 10000 with at most 2 decimal places, "
        f"got {env_str('LLMLOG_COST_DRIFT_ALERT')!r}"
    )
# new-api's quota units per unit of money (new-api's QuotaPerUnit: 500,000 per US dollar): the new-api
# dialect answers `quota` as round(amount x this), rounded half to even.
LLMLOG_NEWAPI_QUOTA_PER_UNIT = env_int("LLMLOG_NEWAPI_QUOTA_PER_UNIT", 500_000, minimum=1)
# The FOCUS export's ProviderName and InvoiceIssuerName: who runs this gateway and bills its orgs.
LLMLOG_FOCUS_PROVIDER_NAME = env_str("LLMLOG_FOCUS_PROVIDER_NAME", "llmlog")
# Budgets and holds (accounting.budgets, accounting.holds): a hold not settled by its usage record within
# this many seconds stops counting (the call died, or its record never came).
LLMLOG_HOLD_TTL_SECONDS = env_int("LLMLOG_HOLD_TTL_SECONDS", 600, minimum=1)
# How accounting seeds a new budget's counter from the usage rows without importing llmlog.
LLMLOG_BUDGET_SPENT_SCANNER = "llmlog.budget_spent.spent_in_period"
# Budget alert webhooks: seconds to wait for the receiver, and deliveries tried before giving up.
LLMLOG_BUDGET_WEBHOOK_TIMEOUT = 5.0
LLMLOG_BUDGET_WEBHOOK_ATTEMPTS = 8
# Records per ingest request; a bigger list is refused whole with a 400.
LLMLOG_BULK_MAX = 1000
# Records (LiteLLM records, OTLP spans) per request to a gateway adapter, counted while the body is read:
# more is a 413 and nothing is stored. LiteLLM batches 512 by default; 10,000 keeps a request at the
# cap within 10 s and 256 MB of a worker (BENCHMARKS.md, "request limits").
LLMLOG_MAX_RECORDS_PER_REQUEST = env_int("LLMLOG_MAX_RECORDS_PER_REQUEST", 10_000, minimum=1)
# The gateway's own tags are kept as sent, up to this many bytes of JSON.
LLMLOG_METADATA_MAX_BYTES = 8192
# PostgreSQL: the single-record ingests a process has in flight at once share one transaction and one
# commit (llmlog.ingest.group); each is answered once its record is committed. Off: one commit each.
# SQLite writes one at a time anyway and keeps its own path.
LLMLOG_INGEST_GROUP_COMMIT = env_bool("LLMLOG_INGEST_GROUP_COMMIT", True)

# The analytics store (llmlog.clickhouse), optional: clickhouse://user:password@host:9000/database. Set,
# history is mirrored into it and stats, counts, totals and long pages read history there; unset, nothing
# changes (and the driver, the `clickhouse` extra, is never imported).
CLICKHOUSE_URL = env_str("CLICKHOUSE_URL") or None

# --- Celery -------------------------------------------------------------------------------------
REDIS_URL = env_str("REDIS_URL")
if REDIS_URL:
    CELERY_BROKER_URL = REDIS_URL
    CELERY_RESULT_BACKEND = REDIS_URL
else:
    # No server needed: kombu's filesystem transport, which also answers `inspect ping`.
    _celery_dir = VAR_DIR / "celery"
    _folders = {name: _celery_dir / name for name in ("queue", "processed", "control", "results")}
    for _folder in _folders.values():
        _folder.mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_URL = "filesystem://"
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_folders["queue"]),
        "data_folder_out": str(_folders["queue"]),
        "processed_folder": str(_folders["processed"]),
        "control_folder": str(_folders["control"]),
        "store_processed": False,
    }
    CELERY_RESULT_BACKEND = f"file://{_folders['results']}"
CELERY_TIMEZONE = TIME_ZONE
CELERY_TASK_ALWAYS_EAGER = env_bool("CELERY_TASK_ALWAYS_EAGER", False)
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_EXPIRES = 3600
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
CELERY_BEAT_SCHEDULE = beat_schedule(backup_hour=LLMLOG_BACKUP_HOUR, clickhouse=bool(CLICKHOUSE_URL))

# Celery's worker logs through LOGGING too (JSON lines), instead of replacing the root logger's handlers.
CELERY_WORKER_HIJACK_ROOT_LOGGER = False

# --- Cache, ingest throttling, metrics ----------------------------------------------------------
CACHE_REDIS_URL = env_str("CACHE_REDIS_URL") or REDIS_URL
if CACHE_REDIS_URL:
    # Shared by every gunicorn worker and host. By default the broker's Redis database: cache keys carry
    # the "llmlog" prefix, and nothing may call cache.clear() there (it would FLUSHDB the broker's queues
    # too); CACHE_REDIS_URL gives the cache a database of its own. Short timeouts: the ingest throttle
    # fails open rather than wait on an unreachable Redis.
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": CACHE_REDIS_URL,
            "KEY_PREFIX": "llmlog",
            "OPTIONS": {"socket_connect_timeout": 0.5, "socket_timeout": 0.5},
        }
    }
else:
    # No server: files under var/, which every process on the machine (gunicorn's workers, the Celery
    # worker) shares. Not the DatabaseCache: on SQLite each throttled ingest request would then take
    # the one database write lock twice more, beside the ingest it is counting.
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
            "LOCATION": str(VAR_DIR / "cache"),
        }
    }

# Ingest requests per API key (fixed window in the cache), the rule in llmlog.api.throttling: a runaway
# org key gets a 429 with Retry-After instead of starving the others. 60000/min (1,000 requests/s) is
# above what one gateway reporting every call sends (each report is one LLM call of a second or more:
# 1,000/s is thousands of calls in flight) and above what a 2-core install ingests one record at a time,
# so it refuses only a loop gone wrong. A platform key (the gateway's own) is not limited unless
# LLMLOG_PLATFORM_INGEST_RATE says so: a gateway that does not retry loses every record it is refused.
# "off" turns either off.
LLMLOG_INGEST_RATE = env_rate("LLMLOG_INGEST_RATE", "60000/min")
LLMLOG_PLATFORM_INGEST_RATE = env_rate("LLMLOG_PLATFORM_INGEST_RATE", "off")
REST_FRAMEWORK["DEFAULT_THROTTLE_CLASSES"] = ["llmlog.api.throttling.IngestRateThrottle"]

# API-key failures (unknown or revoked key) per client address: past this, that address gets a 429 with
# Retry-After for every request with a key until the window ends (llmlog.api.throttling). A gateway
# never fails 20 times a minute; a guesser does. "off" turns it off.
LLMLOG_AUTH_FAILURE_RATE = env_rate("LLMLOG_AUTH_FAILURE_RATE", "20/min")

# The admin login (django-axes): LLMLOG_ADMIN_LOGIN_FAILURES failed logins from one address lock that
# address out for LLMLOG_ADMIN_LOCKOUT_MINUTES (a 429 with Retry-After); a successful login resets the
# count. Attempts are kept in the database (the axes tables, in the admin), which every process shares
# and which needs no cache server.
AXES_HANDLER = "axes.handlers.database.AxesDatabaseHandler"
# Reverse proxies of the deployment's own in front of gunicorn (deploy/README.md: nginx or Caddy), each
# appending to X-Forwarded-For: 0 reads the socket's address, which behind a proxy is the proxy's, one for
# every caller (core.clients).
LLMLOG_TRUSTED_PROXIES = env_int("LLMLOG_TRUSTED_PROXIES", 0, minimum=0)
AXES_FAILURE_LIMIT = env_int("LLMLOG_ADMIN_LOGIN_FAILURES", 10, minimum=1)
AXES_COOLOFF_TIME = timedelta(minutes=env_int("LLMLOG_ADMIN_LOCKOUT_MINUTES", 15, minimum=1))
AXES_LOCKOUT_PARAMETERS = ["ip_address"]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_CALLABLE = "llmlog.api.throttling.admin_lockout_response"
# The caller's address as every address-keyed limit reads it (core.clients): the socket's, or behind
# LLMLOG_TRUSTED_PROXIES reverse proxies the one the outermost saw; never an X-Forwarded-For entry a
# guesser could rotate to dodge the lockout.
AXES_CLIENT_IP_CALLABLE = "core.clients.axes_client_address"
# Successful logins are in the admin's own history; no access-log row per login.
AXES_DISABLE_ACCESS_LOG = True
AXES_VERBOSE = False  # its start-up banner

# /metrics: a Prometheus scrape job sends `Authorization: Bearer <token>`; a staff session needs the
# llmlog.view_llmusage permission.
LLMLOG_METRICS_TOKEN = env_str("LLMLOG_METRICS_TOKEN") or None
