from django.apps import AppConfig, apps
from django.core.signals import request_finished


class PganalyticsConfig(AppConfig):
    name = "pganalytics"
    verbose_name = "PostgreSQL analytics"

    def ready(self):
        from pganalytics import signals  # noqa: F401 - connects the receivers

        # Where /metrics is served (the web app, not the ML service, which reads these models
        # too): its processes write their pool's figures for the sums.
        if apps.is_installed("django_prometheus"):
            from pganalytics import pool_metrics

            request_finished.connect(
                pool_metrics.sync, dispatch_uid="pganalytics.pool_metrics.sync"
            )
        if apps.is_installed("django.contrib.auth"):  # not in the ML service (mlservice.settings)
            from pganalytics import cached_users  # noqa: F401 - connects the receivers
