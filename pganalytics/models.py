"""What collection stores: monitored databases, their snapshots, and per-query statistics.

A `Query` is one fingerprint on one monitored database (several pg_stat_statements rows,
for other users or query ids, can share it). A `Snapshot` is one read of
pg_stat_statements; its `QueryStat` rows hold the server's cumulative counters and the
interval deltas against the previous snapshot, computed once at collection so the pages
read them without recomputing. Foreign keys carry no index of their own: each is the first
column of a composite index or unique constraint that serves the same lookups, and every
index less makes the bulk insert of a snapshot cheaper.
"""

from django.db import models

from pganalytics.dsn import mask_dsn
from pganalytics.formats import timestamp


class MonitoredDatabase(models.Model):
    name = models.SlugField(max_length=63, unique=True)
    dsn = models.TextField(
        "DSN",
        help_text="libpq URL or key=value string, password included; never shown back.",
    )
    enabled = models.BooleanField(default=True, help_text="Collected by `collect`.")
    created_at = models.DateTimeField(auto_now_add=True)
    last_collected_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True, default="")
    updated_at = models.DateTimeField(
        auto_now=True,
        help_text="Any change, a collection's outcome included: cached lists key on it.",
    )
    connects_as_superuser = models.BooleanField(
        null=True,
        blank=True,
        help_text="The DSN's role was a superuser at the last collection (null: not known yet). "
        "A monitoring role needs pg_monitor, not superuser.",
    )

    class Meta:
        ordering = ["name"]
        permissions = [("view_analytics", "Can read the analytics pages and API")]

    def __str__(self):
        return f"{self.name} ({self.masked_dsn})"

    @property
    def masked_dsn(self):
        return mask_dsn(self.dsn)


class Query(models.Model):
    database = models.ForeignKey(
        MonitoredDatabase, on_delete=models.CASCADE, related_name="queries", db_index=False
    )
    fingerprint = models.CharField(max_length=16)
    text = models.TextField(help_text="A statement as pg_stat_statements shows it ($n parameters).")
    normalized = models.TextField()
    parsed = models.BooleanField(
        help_text="False: pglast could not parse it (fallback fingerprint)."
    )
    userid = models.BigIntegerField(
        null=True,
        blank=True,
        help_text="OID of the role that ran `text` (pg_stat_statements.userid of the same row): "
        "EXPLAIN plans the text as that role, never with more privilege.",
    )
    first_seen = models.DateTimeField()
    last_seen = models.DateTimeField()

    class Meta:
        verbose_name_plural = "queries"
        constraints = [
            models.UniqueConstraint(
                fields=["database", "fingerprint"], name="query_unique_fingerprint"
            )
        ]

    def __str__(self):
        return f"{self.fingerprint} {self.text[:80]}"


class Snapshot(models.Model):
    database = models.ForeignKey(
        MonitoredDatabase, on_delete=models.CASCADE, related_name="snapshots", db_index=False
    )
    taken_at = models.DateTimeField()
    stats_reset = models.DateTimeField(
        null=True, blank=True, help_text="pg_stat_statements_info.stats_reset on the server."
    )
    statement_count = models.PositiveIntegerField(
        help_text="pg_stat_statements rows read (before grouping by fingerprint), hidden "
        "statements of other roles left out."
    )
    reset_detected = models.BooleanField(
        default=False, help_text="Statistics were reset (or lost) since the previous snapshot."
    )
    duration_ms = models.FloatField(help_text="Time to read and store this snapshot.")
    warning = models.TextField(
        blank=True,
        default="",
        help_text="What the collection could not see, and how to fix it (it still succeeded).",
    )

    class Meta:
        get_latest_by = "taken_at"
        indexes = [models.Index(fields=["database", "taken_at"], name="snapshot_database_taken")]

    def __str__(self):
        return f"{self.database.name} @ {timestamp(self.taken_at)}"


class QueryStat(models.Model):
    """Cumulative counters of one query at one snapshot, and its deltas over the interval.

    Times are in milliseconds as PostgreSQL reports them. The delta fields are null for a
    database's first snapshot (nothing to compare with); never negative.
    """

    snapshot = models.ForeignKey(
        Snapshot, on_delete=models.CASCADE, related_name="stats", db_index=False
    )
    query = models.ForeignKey(Query, on_delete=models.CASCADE, related_name="stats", db_index=False)
    queryid = models.BigIntegerField(
        null=True,
        blank=True,
        help_text="pg_stat_statements.queryid of the query's row with the most calls.",
    )

    calls = models.BigIntegerField()
    total_exec_time = models.FloatField()
    min_exec_time = models.FloatField()
    max_exec_time = models.FloatField()
    mean_exec_time = models.FloatField()
    stddev_exec_time = models.FloatField()
    rows = models.BigIntegerField()
    shared_blks_hit = models.BigIntegerField()
    shared_blks_read = models.BigIntegerField()
    plans = models.BigIntegerField()
    total_plan_time = models.FloatField()

    interval_seconds = models.FloatField(null=True, blank=True)
    delta_calls = models.BigIntegerField(null=True, blank=True)
    delta_total_exec_time = models.FloatField(null=True, blank=True)
    delta_mean_exec_time = models.FloatField(null=True, blank=True)
    delta_rows = models.BigIntegerField(null=True, blank=True)
    delta_shared_blks_hit = models.BigIntegerField(null=True, blank=True)
    delta_shared_blks_read = models.BigIntegerField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["snapshot", "query"], name="querystat_unique_query")
        ]
        indexes = [
            models.Index(fields=["query", "snapshot"], name="querystat_query_snapshot"),
            models.Index(
                fields=["snapshot", "delta_total_exec_time"], name="querystat_snapshot_total"
            ),
        ]

    def __str__(self):
        return f"{self.query.fingerprint} @ {self.snapshot_id}"
