"""WSGI entry point of the ML service: imported by each gunicorn worker, which then loads the
current model version and keeps watching for a newer one (mlservice.serving)."""

import os

from django.core.wsgi import get_wsgi_application

from pganalytics.config import exit_on_config_error

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mlservice.settings")
with exit_on_config_error():
    application = get_wsgi_application()

from mlservice import serving  # noqa: E402 - needs the settings loaded above

serving.start()
