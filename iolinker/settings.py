"""iolinker settings, read from the environment (see .env.example)."""

import os
import secrets
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

from iolinker.env import (
    database_from_url,
    env_bool,
    env_int,
    env_list,
    env_networks,
    env_str,
    sqlite_database,
)

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(env_str("IOLINKER_VAR_DIR") or BASE_DIR / "var")
# Private: holds the SQLite database, the generated secret key and the admin password.
VAR_DIR.mkdir(mode=0o700, parents=True, exist_ok=True)


def _secret_key() -> str:
    """SECRET_KEY from the environment, else one generated once per install."""
    key = env_str("SECRET_KEY")
    if key:
        return key
    path = VAR_DIR / "secret_key"
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_urlsafe(50))
    return path.read_text().strip()


SECRET_KEY = _secret_key()
DEBUG = env_bool("DEBUG", False)
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "iolinker.apps.IolinkerAdminConfig",  # django.contrib.admin with the dashboard
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_q",
    "workflows",
    "triggers",
    # The management API (/v1/manage/, triggers/manage/): its settings are on its views.
    "rest_framework",
    "knox",  # staff tokens, stored hashed
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # Swagger UI's files, served locally
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "iolinker.urls"
WSGI_APPLICATION = "iolinker.wsgi.application"

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

# --- Database -----------------------------------------------------------------
CONN_MAX_AGE = env_int("CONN_MAX_AGE", 600, minimum=0)
# Off by default: a check costs a round trip per request. Without it, a connection
# broken by a database restart fails one request (503) and is then replaced.
CONN_HEALTH_CHECKS = env_bool("CONN_HEALTH_CHECKS", False)
# PostgreSQL: a pool of this many connections per process (0 = one kept connection
# per thread). `serve` gives its web processes a pool (their many request threads
# need few connections); queue workers fork, so they never get one (a pool's
# sockets would be shared by the forked processes).
DB_POOL_SIZE = env_int("DB_POOL_SIZE", 0, minimum=0)
DATABASE_URL = env_str("DATABASE_URL")
if DATABASE_URL:
    DATABASES = {
        "default": database_from_url(
            DATABASE_URL,
            conn_max_age=CONN_MAX_AGE,
            health_checks=CONN_HEALTH_CHECKS,
            pool_size=DB_POOL_SIZE,
        )
    }
else:
    DATABASES = {"default": sqlite_database(str(VAR_DIR / "iolinker.sqlite3"))}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

CACHES = {
    "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
    # Verified API passwords, keyed by a digest that includes the stored hash
    # (triggers/services/apis.py); process-local on purpose: nothing secret leaves it.
    "credentials": {
        "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
        "LOCATION": "iolinker-credentials",
        "TIMEOUT": env_int("IOLINKER_CREDENTIAL_CACHE_SECONDS", 60, minimum=0),
        "OPTIONS": {"MAX_ENTRIES": 10_000},
    },
}

# Session storage: a new API token shown once by the admin never travels in a cookie.
MESSAGE_STORAGE = "django.contrib.messages.storage.session.SessionStorage"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
STATICFILES_DIRS = [BASE_DIR / "static"]

# --- HTTP trigger -------------------------------------------------------------
# Public base URL used to print full API URLs (admin, `list_apis`; empty: they say
# http://localhost:8000) and as the server of the OpenAPI document (empty: the
# host the document was asked from).
IOLINKER_BASE_URL = env_str("IOLINKER_BASE_URL").rstrip("/")
# GET /v1/openapi.json answers without authentication: it names the module and
# method of every enabled API (never a credential). Off: it answers 404.
IOLINKER_OPENAPI_PUBLIC = env_bool("IOLINKER_OPENAPI_PUBLIC", True)
# How long another process's change of an API (token, enabled, ...) or of a
# workflow's steps may take to reach this one (API changes made in the same
# process apply at once).
IOLINKER_API_CACHE_SECONDS = env_int("IOLINKER_API_CACHE_SECONDS", 2, minimum=0)
IOLINKER_MAX_BODY_BYTES = env_int("IOLINKER_MAX_BODY_BYTES", 1024 * 1024, minimum=1)
# Arrays and objects nested deeper in a trigger's JSON body get 400: far below
# the ~1,000 levels at which Python's JSON decoder runs out of stack (a deeper
# run could be written, but not read back by a worker).
IOLINKER_MAX_JSON_DEPTH = env_int("IOLINKER_MAX_JSON_DEPTH", 100, minimum=1, maximum=500)
# The web server's front (iolinker/server.py) reads every request body before it
# takes a request thread: within this many seconds (else 408; headers get as long),
# and at most IOLINKER_MAX_BODY_BYTES under /v1/ or IOLINKER_MAX_UPLOAD_BYTES
# elsewhere (admin forms and workflow imports; larger ones get 413).
IOLINKER_BODY_READ_TIMEOUT = env_int("IOLINKER_BODY_READ_TIMEOUT", 10, minimum=1, maximum=60)
# Seconds a client may take to accept each chunk of a streamed answer before the
# front stops sending it and frees the request thread (iolinker/server.py).
IOLINKER_SEND_TIMEOUT = env_int("IOLINKER_SEND_TIMEOUT", 30, minimum=1, maximum=3600)
# Request threads per web process (the RSGI front's, iolinker/server.py): read
# here only. `manage.py serve --threads N` starts granian with WEB_THREADS=N in
# its environment, so that its processes' settings read N.
WEB_THREADS = env_int("WEB_THREADS", 32, minimum=1, maximum=1024)
IOLINKER_MAX_UPLOAD_BYTES = env_int("IOLINKER_MAX_UPLOAD_BYTES", 10 * 1024 * 1024, minimum=1)
# Headers (names + values) and query string (decoded keys + values) of a trigger:
# larger ones get 431 / 414 (the web server refuses far larger ones by itself).
IOLINKER_MAX_HEADER_BYTES = env_int("IOLINKER_MAX_HEADER_BYTES", 16 * 1024, minimum=1024)
IOLINKER_MAX_QUERY_BYTES = env_int("IOLINKER_MAX_QUERY_BYTES", 16 * 1024, minimum=1024)
# The status endpoint's ?wait=N: the longest wait, and how many requests of one web
# process may wait at once (each holds a request thread; more answer at once).
IOLINKER_STATUS_MAX_WAIT = env_int("IOLINKER_STATUS_MAX_WAIT", 30, minimum=0, maximum=300)
IOLINKER_STATUS_MAX_WAITERS = env_int("IOLINKER_STATUS_MAX_WAITERS", 16, minimum=0)
# How long an Idempotency-Key answers with its first run (then it is purged, and
# reusing it starts a new run).
IOLINKER_IDEMPOTENCY_SECONDS = env_int("IOLINKER_IDEMPOTENCY_SECONDS", 24 * 3600, minimum=1)
# Request headers kept in a run's trigger input (credentials never are).
IOLINKER_TRIGGER_HEADERS = frozenset(
    h.lower()
    for h in env_list(
        "IOLINKER_TRIGGER_HEADERS",
        [
            "content-type",
            "user-agent",
            "accept",
            "accept-language",
            "referer",
            "origin",
            "x-request-id",
            "x-correlation-id",
            "x-forwarded-for",
            "x-forwarded-proto",
            "x-real-ip",
        ],
    )
)
DATA_UPLOAD_MAX_MEMORY_SIZE = IOLINKER_MAX_BODY_BYTES

# --- Caller limits (triggers/throttle.py; README, "Limits") -------------------
# Peers whose X-Forwarded-For is believed (comma-separated CIDRs): the caller's
# address is then the right-most one in it that is not a trusted proxy. Empty:
# the caller is the TCP peer (REMOTE_ADDR), whatever the headers say.
IOLINKER_TRUSTED_PROXIES = env_networks("IOLINKER_TRUSTED_PROXIES")
# Wrong credentials for one API from one address: after this many within the
# window, that address's calls of that API answer 429 until the window passes
# (its right credentials too: otherwise 429 vs 202 would still tell a guesser
# when it is right). 0: no throttle.
IOLINKER_AUTH_FAILURE_LIMIT = env_int("IOLINKER_AUTH_FAILURE_LIMIT", 10, minimum=0)
IOLINKER_AUTH_FAILURE_WINDOW = env_int("IOLINKER_AUTH_FAILURE_WINDOW", 300, minimum=1)
# All addresses together, per API and window: past this many wrong credentials no
# password hash runs for the API (recently verified credentials and right tokens
# still pass; README, "Limits"). 0: no budget. IPv6 addresses count per /64.
IOLINKER_AUTH_FAILURE_API_LIMIT = env_int("IOLINKER_AUTH_FAILURE_API_LIMIT", 100, minimum=0)
# The admin login: failures per address and per username within the window before
# that address or username is refused (429, no password hash). 0: off.
IOLINKER_LOGIN_FAILURE_LIMIT = env_int("IOLINKER_LOGIN_FAILURE_LIMIT", 10, minimum=0)
IOLINKER_LOGIN_FAILURE_WINDOW = env_int("IOLINKER_LOGIN_FAILURE_WINDOW", 300, minimum=1)

# --- Outbound requests (workflows/outbound.py; README, "Outbound requests") ----
# http and llm steps and completion callbacks connect only to public addresses;
# these networks (CIDRs, e.g. 10.0.0.0/8 for an internal service) are allowed too.
IOLINKER_OUTBOUND_ALLOW = env_networks("IOLINKER_OUTBOUND_ALLOW")

# --- Workers (django-q2) ------------------------------------------------------
# A run is killed after IOLINKER_RUN_TIMEOUT seconds; django-q2 redelivers an
# unacknowledged task only after `retry`, which must exceed the timeout or a
# long run would be started twice.
IOLINKER_RUN_TIMEOUT = env_int("IOLINKER_RUN_TIMEOUT", 600, minimum=1)
# Redis broker only: a run still `queued` this long gets its message pushed again.
IOLINKER_REQUEUE_AFTER = env_int("IOLINKER_REQUEUE_AFTER", 300, minimum=10)
# --- Engine ---------------------------------------------------------------------
# A worker renews the lease of the runs it is running; a run whose lease lapsed
# (worker killed, machine lost) is taken back by the reaper and resumed after its
# last finished step, at most IOLINKER_RUN_MAX_RECOVERIES times, then failed.
IOLINKER_RUN_LEASE_SECONDS = env_int("IOLINKER_RUN_LEASE_SECONDS", 60, minimum=2)
IOLINKER_RUN_MAX_RECOVERIES = env_int("IOLINKER_RUN_MAX_RECOVERIES", 2, minimum=0)
# Finished runs (with their step records and callback deliveries) are deleted this
# many days after they finished (workflows/retention.py); 0 keeps them forever.
IOLINKER_RETAIN_EXECUTIONS_DAYS = env_int("IOLINKER_RETAIN_EXECUTIONS_DAYS", 30, minimum=0)
# How often a worker looks for cancel requests of runs going on longer than that.
IOLINKER_CANCEL_POLL_MS = env_int("IOLINKER_CANCEL_POLL_MS", 500, minimum=50)
# Delay steps up to this long sleep in the worker; longer ones free it (status waiting).
IOLINKER_DELAY_INLINE_SECONDS = env_int("IOLINKER_DELAY_INLINE_SECONDS", 10, minimum=0)
IOLINKER_SUBWORKFLOW_DEPTH = env_int("IOLINKER_SUBWORKFLOW_DEPTH", 8, minimum=1, maximum=64)
# The `code` sandbox (workflows/steps/_jail.py): "isolated" (the default) fails
# code steps where the machine cannot give them no network, a private tmp and
# (as root) a uid of their own; "unisolated" runs them anyway (development only).
IOLINKER_CODE_SANDBOX = env_str("IOLINKER_CODE_SANDBOX", "isolated")
if IOLINKER_CODE_SANDBOX not in ("isolated", "unisolated"):
    raise ImproperlyConfigured(
        f"IOLINKER_CODE_SANDBOX must be isolated or unisolated, got {IOLINKER_CODE_SANDBOX!r}"
    )
# Size of a code step's private tmpfs (/tmp, /var/tmp, /dev/shm and its working directory).
IOLINKER_CODE_TMP_MB = env_int("IOLINKER_CODE_TMP_MB", 64, minimum=1, maximum=4096)

REDIS_URL = env_str("REDIS_URL")
Q_CLUSTER = {
    "name": env_str("IOLINKER_QUEUE_NAME", "iolinker"),
    "workers": env_int("IOLINKER_WORKERS", os.cpu_count() or 2, minimum=1),
    "timeout": IOLINKER_RUN_TIMEOUT,
    "retry": IOLINKER_RUN_TIMEOUT + 60,
    "max_attempts": env_int("IOLINKER_MAX_ATTEMPTS", 3, minimum=1),
    "ack_failures": True,
    # Our Execution row is the record of a run; django-q2 keeping and pruning
    # its own success rows costs ~10x worker throughput (STACK-NOTES).
    "save_limit": -1,
    "poll": 0.1,
    # Messages the pusher takes per broker round trip (each carries a batch of runs).
    "bulk": env_int("IOLINKER_QUEUE_BULK", 16, minimum=1),
    "catch_up": False,
    "label": "Queue",
}
if REDIS_URL:
    if not REDIS_URL.startswith(("redis://", "rediss://", "unix://")):
        raise ImproperlyConfigured(f"REDIS_URL must be a redis:// URL, got {REDIS_URL!r}")
    Q_CLUSTER["redis"] = REDIS_URL
else:
    Q_CLUSTER["orm"] = "default"

# --- Completion callbacks (triggers/callbacks.py) ----------------------------------
# One attempt's limit, connecting and reading the answer included.
IOLINKER_CALLBACK_TIMEOUT = env_int("IOLINKER_CALLBACK_TIMEOUT", 10, minimum=1, maximum=120)
# Attempts before a callback is given up (the first one included).
IOLINKER_CALLBACK_MAX_ATTEMPTS = env_int("IOLINKER_CALLBACK_MAX_ATTEMPTS", 8, minimum=1, maximum=50)
# Seconds before the first retry; each later wait is 4x the one before (up to 12 h).
IOLINKER_CALLBACK_RETRY_BASE = env_int("IOLINKER_CALLBACK_RETRY_BASE", 30, minimum=1)

# --- HTTPS --------------------------------------------------------------------
# IOLINKER_HTTPS=1: served to browsers and callers over HTTPS by a TLS-terminating
# proxy that sets X-Forwarded-Proto (and overwrites a caller's own). Then requests
# it marks https are secure, answers to them carry HSTS, and the admin's session
# and CSRF cookies are sent over HTTPS only.
IOLINKER_HTTPS = env_bool("IOLINKER_HTTPS", False)
if IOLINKER_HTTPS:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_HSTS_SECONDS = env_int("IOLINKER_HSTS_SECONDS", 365 * 24 * 3600, minimum=0)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("IOLINKER_HSTS_INCLUDE_SUBDOMAINS", True)
    SECURE_HSTS_PRELOAD = env_bool("IOLINKER_HSTS_PRELOAD", False)
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
# Django's defaults already send nosniff, X-Frame-Options: DENY,
# Referrer-Policy: same-origin and Cross-Origin-Opener-Policy: same-origin
# (iolinker/responses.py sends the same from the WSGI trigger path).
SILENCED_SYSTEM_CHECKS = [
    # W008, SECURE_SSL_REDIRECT off: redirecting http to https is the TLS proxy's
    # job; here it would turn an API caller's POST into a body-less GET.
    "security.W008",
]
if not env_bool("IOLINKER_HSTS_PRELOAD", False):
    # W021, no HSTS preload: joining browsers' preload lists is a choice of the
    # registrable domain's owner (IOLINKER_HSTS_PRELOAD=1 sends it).
    SILENCED_SYSTEM_CHECKS.append("security.W021")

# --- Django REST framework -------------------------------------------------------
# Every DRF answer is our envelope (iolinker/drf.py): one exception handler over
# the error table, JSON written as every other answer, no browsable API. The
# caller API's views (triggers/http/drf.py) and the management API's
# (triggers/manage/) set their authentication, permissions, throttles, body
# parser and negotiation on the views (iolinker.drf.EnvelopeNegotiation: JSON
# whatever Accept says; the management schema view negotiates JSON or YAML).
# drf-spectacular needs its schema inspector as the default.
REST_FRAMEWORK = {
    "EXCEPTION_HANDLER": "iolinker.drf.exception_handler",
    "DEFAULT_RENDERER_CLASSES": ["iolinker.drf.EnvelopeRenderer"],
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    # Closed by default: every view names its own authentication and permissions
    # (the caller API's wrap the API's caller checks, the management API's are
    # staff token or session). A view that forgets gets no authentication and
    # staff only, never DRF's Basic auth of admin passwords without the login
    # throttle, nor allow-all.
    "DEFAULT_AUTHENTICATION_CLASSES": [],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAdminUser"],
}

# --- Logging ------------------------------------------------------------------
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO").upper()},
    "loggers": {
        "django-q": {"level": env_str("QUEUE_LOG_LEVEL", "WARNING").upper()},
        # httpx logs every request's full URL at INFO: a query string or user info
        # may hold a secret (an API key from env). Warnings and errors only.
        "httpx": {"level": "WARNING"},
        "httpcore": {"level": "WARNING"},
    },
}
