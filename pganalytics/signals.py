"""Signals other parts of the project connect to, and the project's own receivers."""

from django.db.models.signals import post_delete
from django.dispatch import Signal, receiver
from django.utils import timezone

from pganalytics.models import MonitoredDatabase, Snapshot

# Sent with sender=Snapshot and snapshot=<the new Snapshot>, after its transaction commits.
snapshot_collected = Signal()


@receiver(post_delete, sender=Snapshot)
def snapshot_deleted(sender, instance, **kwargs):
    """A deleted snapshot changes the answers about its database: stamp the database, whose
    last change is part of their cache version (services.data_version)."""
    MonitoredDatabase.objects.filter(pk=instance.database_id).update(updated_at=timezone.now())
