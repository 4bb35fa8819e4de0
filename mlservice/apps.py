from django.apps import AppConfig


class MlserviceConfig(AppConfig):
    name = "mlservice"
    verbose_name = "ML service"
    default_auto_field = "django.db.models.BigAutoField"
