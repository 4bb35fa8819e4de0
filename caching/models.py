"""No tables: one unmanaged model gives the cache dashboard its admin entry and permission."""

from django.db import models


class CacheDashboard(models.Model):
    """The admin's cache dashboard; `caching.clear_cache` lets a user clear caches there."""

    class Meta:
        managed = False
        default_permissions = ()
        permissions = [("clear_cache", "Can clear the named caches")]
        verbose_name = verbose_name_plural = "cache dashboard"
