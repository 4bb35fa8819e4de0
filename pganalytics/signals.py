"""Signals other parts of the project connect to, and the project's own receivers."""

from django.db import connection
from django.db.models.signals import post_delete, post_save, pre_delete
from django.dispatch import Signal, receiver
from django.utils import timezone

from pganalytics.analytics import plan_history
from pganalytics.analytics.data_version import changed
from pganalytics.models import (
    DailyStat,
    HourlyStat,
    MonitoredDatabase,
    PlanSample,
    QueryStat,
    Snapshot,
)

# Sent with sender=Snapshot and snapshot=<the new Snapshot>, after its transaction commits.
snapshot_collected = Signal()
# Sent by explain.cached_explain with sender=PlanResult, database_id, sql and result=<the
# PlanResult> for each plan it makes afresh of a collected statement (never a what-if plan).
statement_planned = Signal()


@receiver(pre_delete, sender=MonitoredDatabase)
def database_deleted(sender, instance, **kwargs):
    """A monitored database's history and snapshots go with it, one statement a table."""
    with connection.cursor() as cursor:
        for model in (QueryStat, HourlyStat, DailyStat, PlanSample, Snapshot):
            cursor.execute(
                f"DELETE FROM {model._meta.db_table} WHERE database_id = %s", [instance.pk]
            )


@receiver(pre_delete, sender=Snapshot)
def snapshot_intervals_deleted(sender, instance, **kwargs):
    """A deleted snapshot's intervals go with it (their rollups stay: what they summed
    happened)."""
    QueryStat.objects.filter(snapshot_id=instance.pk, taken_at=instance.taken_at).delete()


@receiver(post_delete, sender=Snapshot)
def snapshot_deleted(sender, instance, **kwargs):
    """A deleted snapshot changes the answers about its database: stamp the database, whose
    last change is part of their cache version (services.data_version)."""
    MonitoredDatabase.objects.filter(pk=instance.database_id).update(updated_at=timezone.now())
    changed(instance.database_id)


@receiver(post_save, sender=MonitoredDatabase)
@receiver(post_delete, sender=MonitoredDatabase)
def database_changed(sender, instance, **kwargs):
    """Added, edited (the admin), collected (a snapshot is stored with its database's save),
    or deleted: the answers about it, and the list of all, change."""
    changed(instance.pk)


@receiver(statement_planned)
def plan_recorded(sender, database_id, sql, result, **kwargs):
    """A fresh plan joins the statement's history: training learns from the plans the app
    made."""
    plan_history.record(database_id, sql, result)
