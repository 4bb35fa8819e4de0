from django.apps import AppConfig


class MlclientConfig(AppConfig):
    name = "mlclient"
    verbose_name = "ML client"
