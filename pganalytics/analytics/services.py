"""The analytics the pages and the API show, each answer computed once and cached.

Cached answers that depend on collected data carry their database's data version
(pganalytics.analytics.data_version) as the cache `version`: a new snapshot moves every
dependent key (features, plans, anomalies, API responses) to a new version at once, in
every process, while fingerprints, which depend only on the statement text, keep theirs.
"""

import re
from collections import defaultdict
from copy import copy
from dataclasses import asdict, dataclass
from datetime import timedelta

from django.conf import settings
from django.core.cache import caches
from django.db import connection
from django.db.models import Count, OuterRef, Subquery, Sum
from django.http import Http404
from django.template.defaultfilters import pluralize
from django.utils import timezone

from pganalytics.analytics import (
    advisor,
    anomalies,
    explain,
    features,
    history,
    latency_predictions,
)
from pganalytics.analytics.data_version import data_version
from pganalytics.config import parse_period
from pganalytics.models import MonitoredDatabase, Query, QueryStat, Snapshot

ORDER_COLUMNS = {"total": "total_ms", "mean": "mean_ms", "calls": "t.calls"}
ORDERINGS = tuple(ORDER_COLUMNS)
DEFAULT_ORDER = "total"
DEFAULT_WINDOW_TEXT = "24h"
WINDOW_CHOICES = ("1h", "6h", "24h", "7d")
HISTORY_WINDOWS = ("24h", "7d", "30d", "365d")  # the query page's; by default its recent intervals
DEFAULT_WINDOW = timedelta(hours=24)
MAX_WINDOW = timedelta(days=3660)
OVERVIEW_TOP = 10  # statements on a database's overview
OVERDUE_PERIODS = 2  # a database not collected for this many of its periods is overdue
FINGERPRINT_FORMAT = re.compile(r"[0-9a-f]{16}|x[0-9a-f]{15}")  # pglast's, or the fallback


class BadRequest(ValueError):
    """A query parameter the caller can fix; the message says which and why."""


def parse_window(text):
    try:
        seconds = parse_period(text)
    except ValueError as error:
        raise BadRequest(f"window={text!r}: {error}")
    if seconds > MAX_WINDOW.total_seconds():
        raise BadRequest(f"window={text!r}: at most {MAX_WINDOW.days} days")
    return timedelta(seconds=seconds)


def parse_order(text):
    if text not in ORDERINGS:
        raise BadRequest(f"order={text!r}: expected one of {', '.join(ORDERINGS)}")
    return text


def one_value(params, name, default):
    """The value of `name` in a request's query parameters (a QueryDict), `default` where
    absent; a parameter given twice is refused rather than one spelling picked."""
    given = params.getlist(name)
    if len(given) > 1:
        raise BadRequest(f"{name}: given {len(given)} times, expected once")
    return given[0] if given else default


def top_query_params(params):
    """{"window", "order"} for top_queries() from a request's query parameters."""
    window = overview_params(params)
    return {**window, "order": parse_order(one_value(params, "order", DEFAULT_ORDER))}


def overview_params(params):
    """{"window"} for database_overview(), read as top_query_params() reads it."""
    return {"window": parse_window(one_value(params, "window", DEFAULT_WINDOW_TEXT))}


def query_detail_params(params):
    """{"window"} for query_detail(): None (the recent intervals) unless given."""
    window = one_value(params, "window", None)
    return {"window": None if window is None else parse_window(window)}


def found_or_404(queryset, message):
    """The first object of `queryset`, else Http404(message): get_object_or_404's own message
    names the model, which the API must not show."""
    found = queryset.first()
    if found is None:
        raise Http404(message)
    return found


def database_or_404(database_id):
    return found_or_404(
        MonitoredDatabase.objects.filter(pk=database_id), f"database {database_id} not found"
    )


def databases():
    newest = Snapshot.objects.filter(database=OuterRef("pk")).order_by("-taken_at", "-pk")
    return MonitoredDatabase.objects.annotate(
        snapshot_count=Count("snapshots"),
        warning=Subquery(newest.values("warning")[:1]),
        evicted=Subquery(newest.values("evicted")[:1]),
        statements_max=Subquery(newest.values("statements_max")[:1]),
    ).order_by("name")


def database_summary(database, user):
    """What the database list shows `user` of one database (`database` from databases()):
    its DSN, masked, to staff only (host, port and role are theirs to know, not viewers')."""
    lag_seconds, overdue = collection_lag(database, timezone.now())
    return {
        "id": database.id,
        "name": database.name,
        "enabled": database.enabled,
        "dsn": database.masked_dsn if user.is_staff else None,
        "snapshots": database.snapshot_count,
        "last_collected_at": database.last_collected_at,
        "last_error": database.last_error,
        "warning": database.warning or "",  # what the newest snapshot could not see
        "connects_as_superuser": database.connects_as_superuser,
        "lag_seconds": lag_seconds,
        "overdue": overdue,
        "evictions": eviction_report(
            database.evicted, database.statements_max, "in the last interval"
        ),
    }


def collection_lag(database, now):
    """Seconds since the last successful collection (None: never), and whether it is overdue:
    not collected for OVERDUE_PERIODS periods of the `collect --every` that claims it (None:
    disabled, or no such collector yet). The answer moves with the clock: never cached."""
    collected = database.last_collected_at
    lag_seconds = (now - collected).total_seconds() if collected else None
    if not database.enabled or database.collection_period is None:
        return lag_seconds, None
    waited = now - (collected or database.created_at)
    return lag_seconds, waited > OVERDUE_PERIODS * database.collection_period


def eviction_report(evicted, statements_max, when):
    """JSON-ready: how many times pg_stat_statements evicted entries `when` (None: not
    known), its current max, and the `warning` the pages show ("" for none): evicted
    statements' calls are missing from the figures until they come back."""
    warning = ""
    if evicted:
        setting = "raise pg_stat_statements.max"
        if statements_max:
            setting += f", now {statements_max}"
        warning = (
            f"pg_stat_statements evicted its least-used entries {evicted} "
            f"time{pluralize(evicted)} {when}; figures may be incomplete: {setting}"
        )
    return {"evicted": evicted, "statements_max": statements_max, "warning": warning}


def evictions(database, since):
    """eviction_report() of the intervals of `database` that end at `since` or later: those a
    top-queries window sums."""
    snapshots = Snapshot.objects.filter(database=database, taken_at__gte=since)
    evicted = snapshots.aggregate(evicted=Sum("evicted"))["evicted"]
    newest = database.snapshots.order_by("-taken_at", "-pk").first()
    return eviction_report(evicted, newest and newest.statements_max, "in this window")


def hit_ratio(hit, read):
    """Share of shared blocks found in PostgreSQL's buffer cache; None when none were touched."""
    return hit / (hit + read) if hit or read else None


@dataclass
class TopQuery:
    fingerprint: str
    text: str
    calls: int
    total_ms: float
    mean_ms: float
    rows: int
    blocks_hit: int
    blocks_read: int
    hit_ratio: float | None
    share: float | None  # of the database's total time in the window (None: no time at all)
    anomaly: str | None = None  # the severity of its open anomaly, set by mark_rows()
    suggested: bool = False  # the advisor suggests an index for it, set by mark_rows()
    prediction: dict | None = None  # latency_predictions.shown(), set by predict_rows()


@dataclass
class Workload:
    """A database's statements over a window: the top ones, and the totals of all of them
    (what each one's share is a share of)."""

    queries: list
    statements: int
    calls: int
    total_ms: float


def workload(database, *, window=DEFAULT_WINDOW, order="total", limit=50):
    """Queries ranked by the sum of their interval deltas over the last `window`, from the
    resolution that fits it (history.span: a long window starts at a day boundary), with the
    totals of every statement that ran in it."""
    totals, params = history.window_totals(database.id, history.span(window))
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT q.fingerprint, q.text, t.calls, t.total_exec_time AS total_ms,"
            " t.total_exec_time / t.calls AS mean_ms, t.rows, t.shared_blks_hit,"
            " t.shared_blks_read, count(*) OVER (), sum(t.calls) OVER (),"
            " sum(t.total_exec_time) OVER ()"
            f" FROM ({totals}) t JOIN {Query._meta.db_table} q ON q.id = t.query_id"
            f" WHERE t.calls > 0 ORDER BY {ORDER_COLUMNS[order]} DESC, q.fingerprint LIMIT %s",
            [*params, limit],
        )
        rows = cursor.fetchall()
    statements, calls, total = rows[0][-3:] if rows else (0, 0, 0.0)
    queries = [
        TopQuery(
            fingerprint=fingerprint,
            text=text,
            calls=calls,
            total_ms=total_ms,
            mean_ms=mean_ms,
            rows=returned,
            blocks_hit=blocks_hit,
            blocks_read=blocks_read,
            hit_ratio=hit_ratio(blocks_hit, blocks_read),
            share=total_ms / total if total else None,
        )
        for fingerprint, text, calls, total_ms, mean_ms, returned, blocks_hit, blocks_read, *_
        in rows
    ]
    return Workload(queries, statements, int(calls), total)


def top_queries(database, *, window=DEFAULT_WINDOW, order="total", limit=50):
    """The queries of workload()."""
    return workload(database, window=window, order=order, limit=limit).queries


def database_overview(database, window):
    """The overview of `database` over the last `window`: overview_figures(), the same for
    every viewer, cached per database, window (as parsed) and data version; and what moves
    on its own, never cached with them: the state of its collection, and the top rows'
    predictions (row_predictions(): the `predictions` cache holds those)."""
    figures = caches["responses"].get_or_set(
        f"overview:{database.id}:{window.total_seconds()}",
        lambda: overview_figures(database, window),
        version=data_version(database.id),
    )
    predictions = row_predictions(database, [row["fingerprint"] for row in figures["top"]])
    for row, prediction in zip(figures["top"], predictions):
        row["prediction"] = prediction
    return {
        "database": {"id": database.id, "name": database.name},
        **figures,
        "collection": collection_state(database, timezone.now()),
    }


def overview_figures(database, window):
    """JSON-ready: the OVERVIEW_TOP statements by total time (with their share of the
    database's total, marked with their open anomaly and suggested index), the totals they
    are a share of, the open anomalies, the suggested indexes (database_suggestions(): of the
    statements with the most time over the default window, the largest estimated saving
    first), what pg_stat_statements holds at the newest snapshot and the window's evictions."""
    start = window_start(window)
    found = workload(database, window=window, limit=OVERVIEW_TOP)
    suggestions = database_suggestions(database)
    newest = database.snapshots.order_by("-taken_at", "-pk").first()
    return {
        "window_seconds": window.total_seconds(),
        "window_start": start,
        "statements": found.statements,
        "calls": found.calls,
        "total_ms": found.total_ms,
        "top": [asdict(row) for row in mark_rows(database, found.queries, suggestions)],
        "top_share": sum(row.share or 0.0 for row in found.queries),
        "anomalies": open_anomalies(database),
        "suggestions": suggestions,
        "pg_stat_statements": {
            "statements": newest and newest.statement_count,
            "statements_max": newest and newest.statements_max,
            "dealloc": newest and newest.dealloc,
            "stats_reset": newest and newest.stats_reset,
        },
        "evictions": evictions(database, start),
    }


def collection_state(database, now):
    """JSON-ready: the last collection, its lag and whether it is overdue (collection_lag),
    the period of the collector that claims it, and the last collection's error."""
    lag_seconds, overdue = collection_lag(database, now)
    period = database.collection_period
    return {
        "enabled": database.enabled,
        "last_collected_at": database.last_collected_at,
        "lag_seconds": lag_seconds,
        "overdue": overdue,
        "period_seconds": period and period.total_seconds(),
        "last_error": database.last_error,
    }


def window_start(window):
    """Where top_queries() over the last `window` starts: the window's start, or for a window
    longer than RAW_RETENTION the start of its UTC day (or of what DAILY_RETENTION keeps)."""
    return history.span(window).start


def recent_snapshots(database):
    """The database's last ANOMALY_WINDOW + 2 snapshots, oldest first: the newest
    ANOMALY_WINDOW + 1 are the intervals every anomaly verdict on it is judged over, from the
    query page or from the list alike (they share one cache key, so they must share the
    input); the oldest gives the first of them its length."""
    newest_first = Snapshot.objects.filter(database=database).order_by("-taken_at")
    return list(reversed(newest_first[: settings.ANOMALY_WINDOW + 2]))


def intervals_of(query, snapshots):
    """The query's intervals over `snapshots` (recent_snapshots()), oldest first: its stored
    rows, and for each snapshot since it was first seen in which it did not move, an idle
    interval (no calls; its cumulative counters those of its last stored row), as every
    snapshot stored them before only what moved was stored."""
    if len(snapshots) < 2:
        return []
    start = snapshots[1].taken_at
    stored = {
        stat.snapshot_id: stat
        for stat in QueryStat.objects.filter(
            query=query, taken_at__gte=start, delta_calls__isnull=False
        )
    }
    last = QueryStat.objects.filter(query=query, taken_at__lt=start).order_by("-taken_at").first()
    intervals = []
    for before, snapshot in zip(snapshots, snapshots[1:]):
        stat = stored.get(snapshot.pk)
        if stat is None and snapshot.taken_at >= query.first_seen:
            stat = idle_interval(last, query, snapshot, before)
        if stat is not None:
            stat.snapshot = snapshot
            intervals.append(stat)
            last = stat
    return intervals


def idle_interval(last, query, snapshot, before):
    """A QueryStat for `snapshot` in which `query` did not run (not stored)."""
    idle = copy(last) if last is not None else QueryStat(query=query, stddev_exec_time=0.0)
    idle.taken_at = snapshot.taken_at
    idle.interval_seconds = (snapshot.taken_at - before.taken_at).total_seconds()
    for name in history.DELTAS + ("mean_exec_time",):
        setattr(idle, f"delta_{name}", 0.0 if "time" in name else 0)
    return idle


def history_points(stats):
    """JSON-ready rows of interval stats (QueryStat with its snapshot), oldest first;
    `evicted`: pg_stat_statements evicted entries in that interval (its figures may be short)."""
    return [
        {
            "taken_at": stat.taken_at,
            "interval_seconds": stat.interval_seconds,
            "calls": stat.delta_calls,
            "calls_per_minute": calls_per_minute(stat),
            "total_ms": stat.delta_total_exec_time,
            "mean_ms": stat.delta_mean_exec_time if stat.delta_calls else None,
            "rows": stat.delta_rows,
            "hit_ratio": hit_ratio(stat.delta_shared_blks_hit, stat.delta_shared_blks_read),
            "evicted": stat.snapshot.evicted,
        }
        for stat in stats
    ]


def window_points(query, window):
    """history_points() of the query over the last `window`, at the span's resolution."""
    return [
        {
            "taken_at": start,
            "interval_seconds": seconds,
            "calls": calls,
            "calls_per_minute": calls * 60.0 / seconds if seconds else None,
            "total_ms": total_ms,
            "mean_ms": total_ms / calls if calls else None,
            "rows": rows,
            "hit_ratio": hit_ratio(hit, read),
            "evicted": None,
        }
        for start, seconds, calls, total_ms, rows, hit, read in history.series(
            query.id, history.span(window, chart=True)
        )
    ]


def calls_per_minute(stat):
    return stat.delta_calls * 60.0 / stat.interval_seconds if stat.interval_seconds else None


def anomaly_point(stat):
    return anomalies.Point(
        taken_at=stat.taken_at,
        mean_ms=stat.delta_mean_exec_time if stat.delta_calls else None,
        calls_per_minute=calls_per_minute(stat),
    )


def plan_of(database, query, version):
    """The EXPLAIN outcome as the pages show it: a plan (with the time it was made), a
    refusal or a failure (`transient` when it may pass), never a 500. Planned anew for each
    data `version` of the database: a new snapshot may follow a schema change."""
    try:
        result = explain.cached_explain(
            database.id, database.dsn, query.text, userid=query.userid, version=version
        )
    except explain.ExplainRefused as refused:
        return {"status": "refused", "reason": str(refused)}
    except explain.ExplainFailed as failed:
        return {"status": "failed", "reason": str(failed), "transient": failed.transient}
    summary = asdict(result.summary)
    summary["large_seq_scans"] = [asdict(scan) for scan in result.summary.large_seq_scans]
    return {
        "status": "ok",
        "generic": result.generic,
        "planned_at": result.planned_at,
        "role": result.role,
        "summary": summary,
        "raw": result.plan_json,
    }


def assessment_of(assessment):
    return {
        "enough_history": assessment.enough_history,
        "reason": assessment.reason,
        "latest_at": assessment.latest_at,
        "points": assessment.points,
        "items": [asdict(anomaly) for anomaly in assessment.anomalies],
    }


def query_detail(database, fingerprint, window=None):
    """Everything known about one query of one database; Http404 for an unknown fingerprint.

    The history is the recent intervals the anomalies are judged over, or with `window` the
    last `window` at the resolution that fits it (history.span). Features, anomalies and the
    plan are cached under the database's data version: a new snapshot changes them all.
    """
    if not FINGERPRINT_FORMAT.fullmatch(fingerprint):
        raise Http404(f"{fingerprint!r} is not a fingerprint")
    query = found_or_404(
        Query.objects.filter(database=database, fingerprint=fingerprint),
        f"query {fingerprint} not found in database {database.id}",
    )
    version = data_version(database.id)
    snapshots = recent_snapshots(database)
    stats = intervals_of(query, snapshots)
    plan = plan_of(database, query, version)
    suggestions = query_suggestions(query, version=version)
    query_features = prediction_features(query, plan)
    assessment = anomalies.cached_assess(
        database.id, fingerprint, lambda: [anomaly_point(stat) for stat in stats], version=version
    )
    return {
        "database": {"id": database.id, "name": database.name},
        "fingerprint": query.fingerprint,
        "text": query.text,
        "normalized": query.normalized,
        "parsed": query.parsed,
        "first_seen": query.first_seen,
        "last_seen": query.last_seen,
        "history": history_points(stats) if window is None else window_points(query, window),
        "resolution": "raw" if window is None else history.span(window, chart=True).resolution,
        "features": query_features,
        "plan": plan,
        "suggestions": suggestions,
        "anomalies": assessment_of(assessment),
        "prediction": query_predictions(query, query_features, suggestions, version),
    }


def prediction_features(query, plan):
    """The feature vector of `query` (a Query row) the ML service predicts its `current`
    latency from, with `plan` (plan_of()): the one place that builds it, for the query page
    and for every prediction of the statement (their cache key holds no features)."""
    version = data_version(query.database_id)
    history = features.recent_history(query)  # as features.query_features() reads it
    latest = history[-1] if history else None
    # Features depend on the plan too: one that failed this time must not stick for the version.
    vector = features.extract(
        query.text, latest, plan.get("raw"), history, version=f"{version}.{plan['status']}"
    )
    return features.with_plan_change(vector, features.plan_cost_before(query))


def query_predictions(query, current_features, suggestions, version):
    """{"current": latency_predictions.shown(), "optimized": the same under the suggested
    index when the advisor verified one (query_suggestions()), else None}, from one batch."""
    items = [(query.fingerprint, current_features, "current")]
    if any(suggestion["verified"] for suggestion in suggestions["suggestions"]):
        items.append(
            (query.fingerprint, lambda: optimized_features(query, version), "optimized")
        )
    found = latency_predictions.predict(items)
    return {"current": found[0], "optimized": found[1] if len(found) > 1 else None}


def row_predictions(database, fingerprints):
    """latency_predictions.shown() of the `current` latency of each of the database's
    `fingerprints`, from one batch asking only for those not in the `predictions` cache; the
    features (a plan each) are computed for those only, through RowFeatures."""
    version = data_version(database.id)
    queries = Query.objects.filter(
        database=database, fingerprint__in=fingerprints
    ).select_related("database")
    by_fingerprint = {query.fingerprint: query for query in queries}
    row_features = RowFeatures(database, version)
    return latency_predictions.predict(
        (fingerprint, lambda query=by_fingerprint[fingerprint]: row_features(query), "current")
        for fingerprint in fingerprints
    )


class RowFeatures:
    """prediction_features() of several statements of one database, each with its plan
    until a plan meets a failure that may pass (a target down or hung): the others then go
    without one, so a page waits for one connection timeout, not one per row."""

    def __init__(self, database, version):
        self.database = database
        self.version = version
        self.failed = None  # the plan_of() failure that may pass, once met

    def __call__(self, query):
        plan = self.failed or plan_of(self.database, query, self.version)
        if plan.get("transient"):
            self.failed = plan
        return prediction_features(query, plan)


def predict_rows(database, rows):
    """Set each TopQuery's `prediction` (row_predictions())."""
    for row, prediction in zip(rows, row_predictions(database, [r.fingerprint for r in rows])):
        row.prediction = prediction
    return rows


def recent_points(database):
    """{Query: [Point]} over recent_snapshots(), in one read, for the queries that ran in them
    (one that did not has no current anomaly)."""
    snapshots = recent_snapshots(database)[1:]
    stats = (
        QueryStat.objects.filter(
            database=database,
            taken_at__gte=snapshots[0].taken_at if snapshots else timezone.now(),
            delta_calls__isnull=False,
        )
        .select_related("query")
        .order_by("taken_at")
    )
    points = defaultdict(list)
    for stat in stats:
        points[stat.query].append(anomaly_point(stat))
    return points


def database_anomalies(database):
    """The database's current anomalies as JSON-ready dicts, assessed through the cache."""
    version = data_version(database.id)
    points = recent_points(database)
    assessments = {
        query: anomalies.cached_assess(
            database.id, query.fingerprint, lambda query=query: points[query], version=version
        )
        for query in points
    }
    return [
        {
            "severity": found.anomaly.severity,
            "database": database.name,
            "database_id": database.id,
            "fingerprint": found.query.fingerprint,
            "text": found.query.text,
            "latest_at": found.latest_at,
            **asdict(found.anomaly),
        }
        for found in anomalies.current_anomalies(assessments)
    ]


def open_anomalies(database):
    """database_anomalies() through the `anomalies` cache, one key per database."""
    return caches["anomalies"].get_or_set(
        f"anomalies:current:{database.id}",
        lambda: database_anomalies(database),
        version=data_version(database.id),
    )


def current_anomalies():
    """Anomalies of every enabled database, most severe first; one cache key per database."""
    found = []
    for database in MonitoredDatabase.objects.filter(enabled=True):
        found += open_anomalies(database)
    found.sort(key=lambda item: (anomalies.SEVERITY_RANK[item["severity"]], -abs(item["score"])))
    return found


def mark_rows(database, queries, suggestions):
    """Set each TopQuery's `anomaly` to the severity of its most severe open anomaly, and
    `suggested` when `suggestions` (database_suggestions()) hold one for it."""
    severities = {}
    for found in open_anomalies(database):  # most severe first
        severities.setdefault(found["fingerprint"], found["severity"])
    suggested = {suggestion["fingerprint"] for suggestion in suggestions}
    for query in queries:
        query.anomaly = severities.get(query.fingerprint)
        query.suggested = query.fingerprint in suggested
    return queries


SUGGESTED_STATEMENTS = 20  # database_suggestions() advises this many top statements


def advice_of(query, version=None):
    """The advisor.Advice for `query` (a Query row) under its database's data `version`."""
    database = query.database
    version = data_version(database.id) if version is None else version
    return advisor.cached_advice(
        database.id, database.dsn, query.text, userid=query.userid, version=version
    )


def suggestion_row(query, suggestion, calls):
    """One suggestion as the pages and the API show it (the overview's keys first)."""
    return {
        "fingerprint": query.fingerprint,
        "query": query.text,
        "table": f"{suggestion.schema}.{suggestion.table}",
        "columns": list(suggestion.columns),
        "statement": suggestion.statement,
        "verified": suggestion.verified,
        "cost_before": suggestion.cost_before,
        "cost_after": suggestion.cost_after,
        "calls": calls,
        "estimated_saving": advisor.estimated_saving(suggestion, calls),
        "estimated_rows": suggestion.estimated_rows,
        "plan_before": list(suggestion.plan_before),
        "plan_after": list(suggestion.plan_after),
        "note": suggestion.note,
    }


def calls_in_window(query, window=DEFAULT_WINDOW):
    """The query's calls over the last `window` (the top-queries page's default)."""
    return sum(point[2] for point in history.series(query.id, history.span(window)))


def query_suggestions(query, version=None):
    """{"suggestions": [suggestion_row()], "reason": why there is none, else None,
    "transient": True when a failure that may pass stood in the way}."""
    advice = advice_of(query, version)
    calls = calls_in_window(query) if advice.suggestions else 0
    return {
        "suggestions": [suggestion_row(query, each, calls) for each in advice.suggestions],
        "reason": advice.reason,
        "transient": advice.transient,
    }


def by_saving(row):
    """Sort key: the largest estimated saving first, unverified ones (None) last."""
    saving = row["estimated_saving"]
    return (saving is None, -(saving or 0.0), row["fingerprint"])


def database_suggestions(database, limit=SUGGESTED_STATEMENTS):
    """suggestion_row()s of the database's top `limit` statements by total time over the
    default window, the largest estimated saving first, unverified ones last.

    A failure that may pass (a target that does not answer) stops the round: the statements
    after it would each wait for the same target; they are advised on a later view.
    """
    version = data_version(database.id)
    top = top_queries(database, limit=limit)
    queries = {
        query.fingerprint: query
        for query in Query.objects.filter(
            database=database, fingerprint__in=[row.fingerprint for row in top]
        ).select_related("database")
    }
    rows = []
    for row in top:
        query = queries[row.fingerprint]
        advice = advice_of(query, version)
        if advice.transient:
            break
        rows += [suggestion_row(query, each, row.calls) for each in advice.suggestions]
    return sorted(rows, key=by_saving)


def optimized_features(query, version=None):
    """The feature vector of `query` under its suggested index: features.extract with the
    what-if plan (the `optimized` scenario the ML service predicts for), the statistics of
    its latest interval as they are, and the what-if plan's cost against that of the plan its
    history ran under (features.with_plan_change); None when it has no verified suggestion."""
    database = query.database
    version = data_version(database.id) if version is None else version
    verified = [each for each in advice_of(query, version).suggestions if each.verified]
    if not verified:
        return None
    history = features.recent_history(query)  # as prediction_features() reads it
    latest = history[-1] if history else None
    vector = features.extract(
        query.text, latest, verified[0].whatif_plan, history, scenario="optimized",
        version=version,
    )
    return features.with_plan_change(vector, features.plan_cost_before(query))
