from django.apps import AppConfig, apps


class PganalyticsConfig(AppConfig):
    name = "pganalytics"
    verbose_name = "PostgreSQL analytics"

    def ready(self):
        from pganalytics import signals  # noqa: F401 - connects the receivers

        if apps.is_installed("django.contrib.auth"):  # not in the ML service (mlservice.settings)
            from pganalytics import cached_users  # noqa: F401 - connects the receivers
