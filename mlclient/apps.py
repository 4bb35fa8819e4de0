from django.apps import AppConfig


class MlclientConfig(AppConfig):
    name = "mlclient"
    verbose_name = "ML client"

    def ready(self):
        # The metrics registered at start: /metrics shows their series (at 0) before the
        # first call to the service.
        from mlclient import metrics  # noqa: F401
