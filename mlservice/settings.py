"""Settings of the ML service process (`manage.py mlservice`, DJANGO_SETTINGS_MODULE
=mlservice.settings): the app's database read as the web app reads it, the history's models
(pganalytics, read-only) and its own; no admin, sessions, auth or templates: a JSON API.
"""

from pganalytics.config import Config
from pganalytics.db import configured_database
from pganalytics.log_config import LOGGING as PROJECT_LOGGING

config = Config()

SECRET_KEY = config.text("SECRET_KEY", "pganalytics-local-development-only")
DEBUG = False
ALLOWED_HOSTS = config.words("ML_SERVICE_ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]")

INSTALLED_APPS = ["django.contrib.contenttypes", "pganalytics", "mlservice"]
MIDDLEWARE = [
    "pganalytics.request_id.RequestIdMiddleware",  # first: every later line logs the id
    "mlservice.access.AccessLogMiddleware",
    "django.middleware.common.CommonMiddleware",  # checks the Host header (ALLOWED_HOSTS)
]
APPEND_SLASH = False  # /health/ is a 404, not a redirect
ROOT_URLCONF = "mlservice.urls"
WSGI_APPLICATION = "mlservice.wsgi.application"

DATABASES = {"default": configured_database(config)}
# One idle connection kept per process, whatever MAX_IDLE_DATABASE_CONNS says: a worker or the
# runner uses two at most (a request or a job; the model watch or the heartbeat).
if "pool" in DATABASES["default"]["OPTIONS"]:
    DATABASES["default"]["OPTIONS"]["pool"]["min_size"] = 1
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
# Larger bodies are refused from their Content-Length, before they are read (mlservice.contract).
DATA_UPLOAD_MAX_MEMORY_SIZE = 1024 * 1024

# How often each worker asks which model version is current (one indexed query).
ML_MODEL_CHECK_INTERVAL = config.period("ML_MODEL_CHECK_INTERVAL", "2s")
# A running job whose runner has not refreshed its heartbeat for this long is marked failed.
ML_JOB_HEARTBEAT_TIMEOUT = config.period("ML_JOB_HEARTBEAT_TIMEOUT", "60s")

USE_TZ = True
TIME_ZONE = "UTC"
# The project's format, plus one line per request (mlservice.access) at INFO, which says what
# Django's warning for each 4xx would say again.
LOGGING = {
    **PROJECT_LOGGING,
    "loggers": {
        **PROJECT_LOGGING["loggers"],
        "django.request": {**PROJECT_LOGGING["loggers"]["django.request"], "level": "ERROR"},
        "mlservice": {"level": "INFO"},
    },
}
