from django.apps import AppConfig
from django.core.signals import request_finished


class PganalyticsConfig(AppConfig):
    name = "pganalytics"
    verbose_name = "PostgreSQL analytics"

    def ready(self):
        from pganalytics import pool_metrics, signals  # noqa: F401 - signals connects receivers

        request_finished.connect(pool_metrics.sync, dispatch_uid="pganalytics.pool_metrics.sync")
