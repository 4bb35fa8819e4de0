from django.apps import AppConfig


class MlclientConfig(AppConfig):
    """Installing the app imports the package, whose client registers mlclient.metrics: the
    series show on /metrics (at 0) before the first call to the service."""

    name = "mlclient"
    verbose_name = "ML client"
