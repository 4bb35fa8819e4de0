from django.apps import AppConfig


class PganalyticsConfig(AppConfig):
    name = "pganalytics"
    verbose_name = "PostgreSQL analytics"

    def ready(self):
        from pganalytics import cached_users, signals  # noqa: F401 - connects the receivers
