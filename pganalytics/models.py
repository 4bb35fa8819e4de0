"""What collection stores: monitored databases, their snapshots, and per-query statistics.

A `Query` is one fingerprint on one monitored database (several pg_stat_statements rows,
for other users or query ids, can share it); it keeps the counters it had when it last
moved, the baseline of its next delta. A `Snapshot` is one read of pg_stat_statements; its
`QueryStat` rows, one per statement that moved since the previous snapshot, hold the
server's cumulative counters and the interval deltas, computed once at collection so the
pages read them without recomputing. QueryStat is partitioned by day
(pganalytics.analytics.history) and kept for RAW_RETENTION; `HourlyStat` and `DailyStat`
hold the same deltas summed per hour and per day, for longer. Foreign keys carry no index
of their own: each is the first column of a composite index or key that serves the same
lookups, and every index less makes the bulk insert of a snapshot cheaper; those of the
history tables carry no constraint either (their writers are ours, deletions cascade through
Django, and a check per row would cost their bulk inserts the most).
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
    next_collection_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text="When `collect --every` is next due to collect it; a collector claims "
        "it by moving this on by its period (null: due now).",
    )
    collection_period = models.DurationField(
        null=True,
        blank=True,
        help_text="The period of the `collect --every` that last claimed it (null: none "
        "yet): a collection older than that is overdue.",
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
    last_seen = models.DateTimeField(help_text="The last snapshot in which it moved.")
    # Its cumulative counters when it last moved (or was first seen): the next delta's baseline.
    last_calls = models.BigIntegerField(null=True, blank=True)
    last_total_exec_time = models.FloatField(null=True, blank=True)
    last_rows = models.BigIntegerField(null=True, blank=True)
    last_shared_blks_hit = models.BigIntegerField(null=True, blank=True)
    last_shared_blks_read = models.BigIntegerField(null=True, blank=True)

    class Meta:
        verbose_name_plural = "queries"
        constraints = [
            models.UniqueConstraint(
                fields=["database", "fingerprint"], name="query_unique_fingerprint"
            )
        ]
        indexes = [
            # The statements that moved in a window (its totals start from them), and those
            # holding a baseline (a snapshot clears those it lacks), among all ever seen.
            models.Index(fields=["database", "last_seen"], name="query_database_last_seen"),
            models.Index(
                fields=["database"],
                condition=models.Q(last_calls__isnull=False),
                name="query_with_baseline",
            ),
        ]

    def __str__(self):
        return f"{self.fingerprint} {self.text[:80]}"


class Snapshot(models.Model):
    database = models.ForeignKey(
        MonitoredDatabase,
        on_delete=models.DO_NOTHING,  # deleted with the history, set-wise (pganalytics.signals)
        related_name="snapshots",
        db_index=False,
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
    dealloc = models.BigIntegerField(
        null=True,
        blank=True,
        help_text="pg_stat_statements_info.dealloc: times the server evicted entries (the "
        "least-used 5 % each time) since its statistics were reset (null: not known).",
    )
    evicted = models.BigIntegerField(
        null=True,
        blank=True,
        help_text="Times the server evicted entries since the previous snapshot (null: "
        "first snapshot, or not known): the interval's figures may be incomplete.",
    )
    statements_max = models.IntegerField(
        null=True,
        blank=True,
        help_text="pg_stat_statements.max on the server (null: not known): the setting "
        "to raise when entries are evicted.",
    )

    class Meta:
        get_latest_by = "taken_at"
        indexes = [models.Index(fields=["database", "taken_at"], name="snapshot_database_taken")]

    def __str__(self):
        return f"{self.database.name} @ {timestamp(self.taken_at)}"


def history_key(to, related_name="+"):
    """A foreign key of the history tables: no index of its own, no constraint, and no
    cascade through Django's collector (millions of rows, one by one): their rows go
    set-wise with their database or snapshot (pganalytics.signals)."""
    return models.ForeignKey(
        to, on_delete=models.DO_NOTHING, related_name=related_name, db_index=False,
        db_constraint=False,
    )


class QueryStat(models.Model):
    """Cumulative counters of one query at one snapshot in which it moved, and its deltas
    over the interval (since the database's previous snapshot: it did not move before).

    Times are in milliseconds as PostgreSQL reports them. The delta fields are null for a
    database's first snapshot (nothing to compare with); never negative. `taken_at` and
    `database` repeat the snapshot's: the table is partitioned by `taken_at`, and the pages
    read a database's window without a join.
    """

    pk = models.CompositePrimaryKey("query", "taken_at")
    query = history_key(Query, "stats")
    taken_at = models.DateTimeField()
    snapshot = history_key(Snapshot, "stats")
    database = history_key(MonitoredDatabase)
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
        indexes = [
            models.Index(fields=["database", "taken_at"], name="querystat_database_taken"),
            models.Index(fields=["snapshot"], name="querystat_snapshot"),
        ]

    def __str__(self):
        return f"{self.query.fingerprint} @ {timestamp(self.taken_at)}"


class Rollup(models.Model):
    """The interval deltas of one query summed over one bucket (an hour or a day, UTC): an
    interval belongs to the bucket its snapshot was taken in, so a window of whole buckets
    sums the same from the raw intervals or from their rollups."""

    query = history_key(Query)
    bucket = models.DateTimeField(help_text="Start of the hour or day.")
    database = history_key(MonitoredDatabase)
    intervals = models.IntegerField(help_text="Raw intervals summed (those in which it moved).")
    calls = models.BigIntegerField()
    total_exec_time = models.FloatField()
    rows = models.BigIntegerField()
    shared_blks_hit = models.BigIntegerField()
    shared_blks_read = models.BigIntegerField()

    class Meta:
        abstract = True


class HourlyStat(Rollup):
    """Per hour, kept HOURLY_RETENTION; partitioned by day like QueryStat."""

    pk = models.CompositePrimaryKey("query", "bucket")

    class Meta:
        indexes = [models.Index(fields=["database", "bucket"], name="hourlystat_database_bucket")]


class DailyStat(Rollup):
    """Per day, kept DAILY_RETENTION; with the statement's deltas summed from its first day
    through this one (`running_*`), so that the totals of any run of days are a difference of
    two rows, however many days it spans."""

    pk = models.CompositePrimaryKey("query", "bucket")
    running_calls = models.BigIntegerField()
    running_total_exec_time = models.FloatField()
    running_rows = models.BigIntegerField()
    running_shared_blks_hit = models.BigIntegerField()
    running_shared_blks_read = models.BigIntegerField()

    class Meta:
        indexes = [models.Index(fields=["database", "bucket"], name="dailystat_database_bucket")]


class PlanSample(models.Model):
    """The plan features (features.plan_features) of a fresh EXPLAIN of a statement, as the
    app made it for a page (never a what-if plan): training gives each past interval the
    statement's newest plan at or before it, as serving gives the current one. Kept
    DAILY_RETENTION, each statement's newest one before that too."""

    pk = models.CompositePrimaryKey("query", "taken_at")
    query = history_key(Query)
    taken_at = models.DateTimeField(help_text="When the plan was made.")
    database = history_key(MonitoredDatabase)
    plan_seq_scans = models.FloatField()
    plan_total_cost = models.FloatField()
    plan_rows = models.FloatField(help_text="Estimated rows of the top node.")

    class Meta:
        indexes = [models.Index(fields=["database", "taken_at"], name="plansample_database_taken")]


class RollupState(models.Model):
    """How far the rollups are made, for all databases: hours before `hourly_to` and days
    before `daily_to` are summed. One row, locked by the compaction that moves it."""

    hourly_to = models.DateTimeField(null=True, blank=True)
    daily_to = models.DateTimeField(null=True, blank=True)
