"""The analytics the pages and the API show, each answer computed once and cached.

Cached answers that depend on collected data carry the newest snapshot id of their database
as the cache `version`: a new snapshot moves every dependent key (features, plans,
anomalies, API responses) to a new version at once, in every process, while fingerprints,
which depend only on the statement text, keep theirs.
"""

import re
from collections import defaultdict
from dataclasses import asdict, dataclass
from datetime import timedelta

from django.conf import settings
from django.core.cache import caches
from django.db.models import Count, F, FloatField, Max, OuterRef, Subquery, Sum
from django.db.models.functions import Cast, NullIf
from django.http import Http404
from django.utils import timezone

from pganalytics import anomalies, explain, features
from pganalytics.config import parse_period
from pganalytics.models import MonitoredDatabase, Query, QueryStat, Snapshot

ORDERINGS = {"total": "-total_ms", "mean": "-mean_ms", "calls": "-calls"}
DEFAULT_ORDER = "total"
DEFAULT_WINDOW_TEXT = "24h"
WINDOW_CHOICES = ("1h", "6h", "24h", "7d")
DEFAULT_WINDOW = timedelta(hours=24)
MAX_WINDOW = timedelta(days=3660)
FINGERPRINT_FORMAT = re.compile(r"[0-9a-f]{16}|x[0-9a-f]{15}")  # pglast's, or the fallback
PREDICTION_PLACEHOLDER = {
    "status": "unavailable",
    "reason": "latency predictions arrive with the ML service client",
}


class BadRequest(ValueError):
    """A query parameter the caller can fix; the message says which and why."""


def data_version(database_id=None):
    """What the answers about one database (or all) depend on, as a cache `version`: its
    newest snapshot id, and the last change to the monitored databases themselves (a
    rename, a failed collection's error, a deleted snapshot, one added or removed)."""
    snapshots, monitored = Snapshot.objects.all(), MonitoredDatabase.objects.all()
    if database_id is not None:
        snapshots = snapshots.filter(database_id=database_id)
        monitored = monitored.filter(pk=database_id)
    newest = snapshots.aggregate(newest=Max("id"))["newest"] or 0
    changed = monitored.aggregate(changed=Max("updated_at"), count=Count("id"))
    stamp = changed["changed"].timestamp() if changed["changed"] else 0
    return f"{newest}.{stamp}.{changed['count']}"


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


def top_query_params(params):
    """{"window", "order"} for top_queries() from a request's query parameters (a QueryDict),
    defaults where absent; a parameter given twice is refused rather than one spelling picked."""
    for name in ("window", "order"):
        given = params.getlist(name)
        if len(given) > 1:
            raise BadRequest(f"{name}: given {len(given)} times, expected once")
    return {
        "window": parse_window(params.get("window", DEFAULT_WINDOW_TEXT)),
        "order": parse_order(params.get("order", DEFAULT_ORDER)),
    }


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
        snapshot_count=Count("snapshots"), warning=Subquery(newest.values("warning")[:1])
    ).order_by("name")


def database_summary(database):
    """What the database list shows of one database (`database` from databases())."""
    return {
        "id": database.id,
        "name": database.name,
        "enabled": database.enabled,
        "dsn": database.masked_dsn,
        "snapshots": database.snapshot_count,
        "last_collected_at": database.last_collected_at,
        "last_error": database.last_error,
        "warning": database.warning or "",  # what the newest snapshot could not see
        "connects_as_superuser": database.connects_as_superuser,
    }


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


def top_queries(database, *, window=DEFAULT_WINDOW, order="total", limit=50):
    """Queries ranked by the sum of their interval deltas over the last `window`."""
    since = timezone.now() - window
    rows = (
        QueryStat.objects.filter(
            snapshot__database=database, snapshot__taken_at__gte=since, delta_calls__isnull=False
        )
        .values("query__fingerprint", "query__text")
        .annotate(
            calls=Sum("delta_calls"),
            total_ms=Sum("delta_total_exec_time"),
            rows=Sum("delta_rows"),
            blocks_hit=Sum("delta_shared_blks_hit"),
            blocks_read=Sum("delta_shared_blks_read"),
        )
        .filter(calls__gt=0)
        .annotate(mean_ms=F("total_ms") / Cast(NullIf(F("calls"), 0), FloatField()))
        .order_by(ORDERINGS[order], "query__fingerprint")[:limit]
    )
    return [
        TopQuery(
            fingerprint=row["query__fingerprint"],
            text=row["query__text"],
            calls=row["calls"],
            total_ms=row["total_ms"],
            mean_ms=row["mean_ms"],
            rows=row["rows"],
            blocks_hit=row["blocks_hit"],
            blocks_read=row["blocks_read"],
            hit_ratio=hit_ratio(row["blocks_hit"], row["blocks_read"]),
        )
        for row in rows
    ]


def history(query, limit=200):
    """The query's interval stats, oldest first, with their snapshot times."""
    stats = (
        QueryStat.objects.filter(query=query, delta_calls__isnull=False)
        .select_related("snapshot")
        .order_by("-snapshot__taken_at")[:limit]
    )
    return list(reversed(stats))


def history_points(stats):
    """JSON-ready rows of interval stats (QueryStat with its snapshot), oldest first."""
    return [
        {
            "taken_at": stat.snapshot.taken_at,
            "interval_seconds": stat.interval_seconds,
            "calls": stat.delta_calls,
            "calls_per_minute": calls_per_minute(stat),
            "total_ms": stat.delta_total_exec_time,
            "mean_ms": stat.delta_mean_exec_time if stat.delta_calls else None,
            "rows": stat.delta_rows,
            "hit_ratio": hit_ratio(stat.delta_shared_blks_hit, stat.delta_shared_blks_read),
        }
        for stat in stats
    ]


def calls_per_minute(stat):
    return stat.delta_calls * 60.0 / stat.interval_seconds if stat.interval_seconds else None


def anomaly_point(stat):
    return anomalies.Point(
        taken_at=stat.snapshot.taken_at,
        mean_ms=stat.delta_mean_exec_time if stat.delta_calls else None,
        calls_per_minute=calls_per_minute(stat),
    )


def interval_stats(stat):
    """The features' view of one interval (stddev is the server's cumulative one)."""
    return features.IntervalStats(
        calls=stat.delta_calls,
        interval_seconds=stat.interval_seconds or 0.0,
        mean_ms=stat.delta_mean_exec_time or 0.0,
        stddev_ms=stat.stddev_exec_time,
        rows=stat.delta_rows,
        shared_blks_hit=stat.delta_shared_blks_hit,
        shared_blks_read=stat.delta_shared_blks_read,
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


def query_detail(database, fingerprint):
    """Everything known about one query of one database; Http404 for an unknown fingerprint.

    Features, anomalies and the plan are cached under the database's data version: a new
    snapshot changes them all.
    """
    if not FINGERPRINT_FORMAT.fullmatch(fingerprint):
        raise Http404(f"{fingerprint!r} is not a fingerprint")
    query = found_or_404(
        Query.objects.filter(database=database, fingerprint=fingerprint),
        f"query {fingerprint} not found in database {database.id}",
    )
    version = data_version(database.id)
    stats = history(query, limit=settings.ANOMALY_WINDOW + 1)
    plan = plan_of(database, query, version)
    latest = interval_stats(stats[-1]) if stats else None
    # Features depend on the plan too: one that failed this time must not stick for the version.
    query_features = features.extract(
        query.text, latest, plan.get("raw"), version=f"{version}.{plan['status']}"
    )
    recent = set(recent_snapshot_ids(database))
    assessment = anomalies.cached_assess(
        database.id, fingerprint,
        lambda: [anomaly_point(stat) for stat in stats if stat.snapshot_id in recent],
        version=version,
    )
    return {
        "database": {"id": database.id, "name": database.name},
        "fingerprint": query.fingerprint,
        "text": query.text,
        "normalized": query.normalized,
        "parsed": query.parsed,
        "first_seen": query.first_seen,
        "last_seen": query.last_seen,
        "history": history_points(stats),
        "features": query_features,
        "plan": plan,
        "anomalies": assessment_of(assessment),
        "prediction": PREDICTION_PLACEHOLDER,
    }


def recent_snapshot_ids(database):
    """The database's last ANOMALY_WINDOW + 1 snapshot ids, newest first: the history every
    anomaly verdict on it is judged over, from the query page or from the list alike (they
    share one cache key, so they must share the input)."""
    return list(
        Snapshot.objects.filter(database=database)
        .order_by("-taken_at")
        .values_list("id", flat=True)[: settings.ANOMALY_WINDOW + 1]
    )


def recent_points(database):
    """{Query: [Point]} over recent_snapshot_ids(), in one read, for the queries of the
    newest snapshot (a query no longer seen has no current anomaly)."""
    snapshot_ids = recent_snapshot_ids(database)
    stats = (
        QueryStat.objects.filter(snapshot_id__in=snapshot_ids, delta_calls__isnull=False)
        .select_related("snapshot", "query")
        .order_by("snapshot__taken_at")
    )
    points, current = defaultdict(list), set()
    for stat in stats:
        points[stat.query].append(anomaly_point(stat))
        if stat.snapshot_id == snapshot_ids[0]:
            current.add(stat.query)
    return {query: points[query] for query in current}


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


def current_anomalies():
    """Anomalies of every enabled database, most severe first; one cache key per database."""
    found = []
    for database in MonitoredDatabase.objects.filter(enabled=True):
        key = f"anomalies:current:{database.id}"
        found += caches["anomalies"].get_or_set(
            key, lambda database=database: database_anomalies(database),
            version=data_version(database.id),
        )
    found.sort(key=lambda item: (anomalies.SEVERITY_RANK[item["severity"]], -abs(item["score"])))
    return found
