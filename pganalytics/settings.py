"""Settings: every knob read from the environment (see DESIGN.md, Configuration).

The defaults run on one machine. A bad value raises ConfigError naming the variable;
manage.py and wsgi.py turn that into one line on stderr.
"""

from datetime import timedelta
from pathlib import Path

from caching.config import named_caches
from pganalytics.config import Config
from pganalytics.db import configured_database
from pganalytics.log_config import LOGGING  # noqa: F401 - Django reads it from here

BASE_DIR = Path(__file__).resolve().parent.parent
config = Config()

SECRET_KEY = config.text("SECRET_KEY", "pganalytics-local-development-only")
# Off unless asked for: Django's debug pages show local variables, and a monitored
# database's DSN (with its password) is one of them in the analytics' call stacks.
DEBUG = config.boolean("DEBUG", False)
ALLOWED_HOSTS = config.words("ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.humanize",
    "django_prometheus",
    "caching",
    "mlclient",
    "pganalytics",
    "mlservice",  # its tables (the service itself runs in its own process: mlservice.settings)
    # After pganalytics: the first app wins a command name, and pganalytics' runserver
    # (staticfiles' own, checking the database first) must win.
    "django.contrib.staticfiles",
]

MIDDLEWARE = [
    "pganalytics.request_id.RequestIdMiddleware",  # first: every later error logs the id
    "django_prometheus.middleware.PrometheusBeforeMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",  # static files from any server, DEBUG or not
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_prometheus.middleware.PrometheusAfterMiddleware",
]

ROOT_URLCONF = "pganalytics.urls"
WSGI_APPLICATION = "pganalytics.wsgi.application"

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

# --- database (pganalytics/db.py) -------------------------------------------------------
DATABASES = {"default": configured_database(config)}
# django-prometheus' engine: Django's own, with query and connection counters.
DATABASES["default"]["ENGINE"] = "django_prometheus.db.backends.postgresql"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- caches (caching/config.py) ---------------------------------------------------------
SESSION_COOKIE_AGE = 14 * 24 * 3600  # Django's default, named: the sessions cache's TTL
USERS_CACHE_TTL = 15 * 60  # a bound only: every change to a user or permission moves them
CACHE_ENABLED = config.boolean("CACHE_ENABLED", True)
CACHE_MAX_SIZE = config.integer("CACHE_MAX_SIZE", 10000, minimum=1)
CACHE_L2_URL = config.url("CACHE_L2_URL", "", schemes=("redis", "rediss", "unix"))
CACHES = named_caches(
    {
        "features": config.cache_timeout("FEATURE_CACHE_TTL", "15m"),
        "predictions": config.cache_timeout("PREDICTION_CACHE_TTL", "5m"),
        "fingerprints": config.cache_timeout("FINGERPRINT_CACHE_TTL", "10m"),
        "explain": config.cache_timeout("EXPLAIN_CACHE_TTL", "30m"),
        "anomalies": config.cache_timeout("ANOMALY_CACHE_TTL", "5m"),
        "responses": config.cache_timeout("QUERY_RESULTS_CACHE_TTL", "10m"),
        "advisor": config.cache_timeout("ADVISOR_CACHE_TTL", "30m"),
        # Used with the Redis tier only (see below): no TTL to tune, every change moves them.
        "sessions": SESSION_COOKIE_AGE,  # each session is kept as long as it lasts
        "users": USERS_CACHE_TTL,
        "versions": None,  # replaced by every change, never expired (data_version.py)
    },
    max_entries=CACHE_MAX_SIZE,
    enabled=CACHE_ENABLED,
    l2_url=CACHE_L2_URL,
    # Cached values are pickled objects of this code (plans, anomaly verdicts): a change to
    # their fields bumps this, so a deploy never reads what older code left in Redis.
    key_prefix="pganalytics.3",
)

# With the Redis tier, a cached answer costs no database round trip: sessions (cached_db),
# the user and their permissions (pganalytics/cached_users.py) and the data version
# (pganalytics/analytics/data_version.py) are read from caches every process shares. Without
# it they are read from the database: a logout, a permission removed or a new snapshot in one
# process would not reach the copies of the others.
SESSION_ENGINE = (
    "django.contrib.sessions.backends.cached_db"
    if CACHE_L2_URL
    else "django.contrib.sessions.backends.db"
)
SESSION_CACHE_ALIAS = "sessions"
AUTHENTICATION_BACKENDS = ["pganalytics.cached_users.CachedModelBackend"]

# Extra panels of the admin's cache dashboard: title -> a callable returning a flat dict.
CACHE_DASHBOARD_PANELS = {
    "Database pool": "pganalytics.pool_metrics.summed",
    "ML client": "pganalytics.analytics.latency_predictions.client_stats",
}
# Who may read /metrics: these addresses, or anyone with `Authorization: Bearer METRICS_TOKEN`.
METRICS_ALLOWED_ADDRESSES = config.networks("METRICS_ALLOWED_ADDRESSES", "127.0.0.1,::1")
METRICS_TOKEN = config.text("METRICS_TOKEN", "")

# --- ML service client (mlclient) -------------------------------------------------------
ML_SERVICE_URL = config.url("ML_SERVICE_URL", "http://127.0.0.1:8081", schemes=("http", "https"))
ML_SERVICE_TIMEOUT = config.period("ML_SERVICE_TIMEOUT", "5s")
# gunicorn workers of `manage.py mlservice` (and the start-up check's count of its connections)
ML_SERVICE_WORKERS = config.integer("ML_SERVICE_WORKERS", 2)
MAX_HTTP_CONNS = config.integer("MAX_HTTP_CONNS", 10, minimum=1)
MAX_HTTP_CONNS_PER_HOST = config.integer("MAX_HTTP_CONNS_PER_HOST", 5, minimum=1)
RETRY_MAX_ATTEMPTS = config.integer("RETRY_MAX_ATTEMPTS", 3)
RETRY_INITIAL_BACKOFF = config.duration("RETRY_INITIAL_BACKOFF", "100ms")
RETRY_BACKOFF_MULTIPLIER = config.number("RETRY_BACKOFF_MULTIPLIER", 2.0, minimum=1.0)
RETRY_MAX_BACKOFF = config.duration("RETRY_MAX_BACKOFF", "2s")
CIRCUIT_FAILURE_THRESHOLD = config.integer("CIRCUIT_FAILURE_THRESHOLD", 5, minimum=1)
CIRCUIT_RESET_TIMEOUT = config.period("CIRCUIT_RESET_TIMEOUT", "30s")
# Pages and API answers ask for predictions once, waiting at most this long for an answer
# (pganalytics/analytics/latency_predictions.py), then show the last value or "unavailable".
ML_PAGE_TIMEOUT = config.period("ML_PAGE_TIMEOUT", "1s")
# Every call to the service forwards the id of the request being served (X-Request-ID).
MLCLIENT_REQUEST_ID = "pganalytics.request_id.current_request_id"

# --- analytics (pganalytics/analytics/explain.py, advisor.py, anomalies.py) --------------
EXPLAIN_STATEMENT_TIMEOUT = config.period("EXPLAIN_STATEMENT_TIMEOUT", "2s")
# The index advisor (pganalytics/analytics/advisor.py) may create hypopg in a monitored
# database where its role may (a superuser): what-if plans verify the suggestions.
ADVISOR_CREATE_HYPOPG = config.boolean("ADVISOR_CREATE_HYPOPG", False)
ANOMALY_WINDOW = config.integer("ANOMALY_WINDOW", 48, minimum=1)  # intervals in the baseline
ANOMALY_MIN_POINTS = config.integer("ANOMALY_MIN_POINTS", 8, minimum=1)  # needed for a verdict

# --- history (pganalytics/analytics/history.py) -----------------------------------------
RAW_RETENTION = timedelta(seconds=config.period("RAW_RETENTION", "2d"))
HOURLY_RETENTION = timedelta(seconds=config.period("HOURLY_RETENTION", "30d"))
DAILY_RETENTION = timedelta(seconds=config.period("DAILY_RETENTION", "365d"))

# --- the rest ---------------------------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
# Timestamps as `2026-12-01 10:28:56 UTC` on the pages and in the admin (pganalytics/formats).
FORMAT_MODULE_PATH = ["pganalytics.formats"]
STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"  # `manage.py collectstatic` (scripts/setup does it)

# --- viewers and errors (pganalytics/access.py, errors.py, request_id.py) ---------------
LOGIN_URL = "pganalytics:login"
LOGIN_REDIRECT_URL = "pganalytics:databases"
LOGOUT_REDIRECT_URL = "pganalytics:login"
CSRF_FAILURE_VIEW = "pganalytics.errors.csrf_failure"
