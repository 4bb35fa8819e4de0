from django.apps import AppConfig


class PganalyticsConfig(AppConfig):
    name = "pganalytics"
    verbose_name = "PostgreSQL analytics"
