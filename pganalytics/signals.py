"""Signals other parts of the project connect to (e.g. cache invalidation)."""

from django.dispatch import Signal

# Sent with sender=Snapshot and snapshot=<the new Snapshot>, after its transaction commits.
snapshot_collected = Signal()
