from django.apps import AppConfig
from django.core.signals import request_finished


class CachingConfig(AppConfig):
    name = "caching"
    verbose_name = "Caches"

    def ready(self):
        from caching import prometheus

        request_finished.connect(prometheus.sync, dispatch_uid="caching.prometheus.sync")
