"""Latency and call-rate anomalies: the latest interval against a robust baseline.

The baseline of each metric is the median and MAD (median absolute deviation) of the
`window` intervals before the latest one; the score is the robust z-score
0.6745 * (x - median) / MAD, which one outlier in the history cannot drag the way a mean
and standard deviation would. Two guards keep quiet series quiet: a MAD of 0 (a flat
history) is floored at a fraction of the median, and a change smaller than a minimum
absolute amount (0.01 ms -> 0.03 ms) is never an anomaly, however large its score.
"""

from dataclasses import dataclass
from datetime import datetime
from statistics import median

from django.conf import settings
from django.core.cache import caches

CONSISTENCY = 0.6745  # makes the MAD of normal data comparable to its standard deviation
MAD_FLOOR_FRACTION = 0.05  # a MAD never counts as less than 5% of the median (flat histories)
MAD_FLOOR_ABSOLUTE = 1e-6  # ... and never as 0, so a flat series at 0 still scores
WARNING_SCORE = 3.5
CRITICAL_SCORE = 6.0
SEVERITY_RANK = {"critical": 0, "warning": 1}
# The Point fields watched, and the directions of change that matter: faster is good news,
# but a call rate that collapses is as telling as one that surges.
DIRECTIONS = {"mean_ms": ("up",), "calls_per_minute": ("up", "down")}
# The smallest absolute change worth reporting, per metric (ms; calls per minute).
MIN_CHANGE = {"mean_ms": 1.0, "calls_per_minute": 1.0}


@dataclass(frozen=True)
class Point:
    """One collected interval of one query; a metric may be None (no calls: no latency)."""

    taken_at: datetime
    mean_ms: float | None
    calls_per_minute: float | None


@dataclass(frozen=True)
class Anomaly:
    metric: str
    value: float
    baseline_median: float
    mad: float  # as used for the score (after the flat-history floor)
    score: float  # robust z-score, signed (negative: below the baseline)
    severity: str  # "warning" | "critical"
    direction: str  # "up" | "down"


@dataclass(frozen=True)
class Assessment:
    """The verdict on a query's latest interval; without enough history, `reason` says so."""

    anomalies: tuple = ()
    enough_history: bool = True
    reason: str = ""
    latest_at: datetime | None = None
    points: int = 0


def severity_of(score, warning=WARNING_SCORE, critical=CRITICAL_SCORE):
    """"critical", "warning" or None for an absolute robust z-score."""
    if score >= critical:
        return "critical"
    if score >= warning:
        return "warning"
    return None


def assess(points, *, window, min_points, warning=WARNING_SCORE, critical=CRITICAL_SCORE,
           min_change=None):
    """Assessment of the latest of `points` against the up to `window` points before it.

    A metric needs at least `min_points` earlier values to get a verdict; when no metric
    has them, the Assessment says so instead of reporting "no anomaly". `min_change`
    overrides MIN_CHANGE for some metrics.
    """
    ordered = sorted(points, key=lambda point: point.taken_at)
    if not ordered:
        return Assessment(enough_history=False, reason="no collected intervals yet")
    latest = ordered[-1]
    min_change = {**MIN_CHANGE, **(min_change or {})}
    anomalies, judged = [], 0
    for metric, directions in DIRECTIONS.items():
        value = getattr(latest, metric)
        baseline = [x for x in (getattr(p, metric) for p in ordered[:-1]) if x is not None]
        baseline = baseline[-window:]
        if value is None or len(baseline) < min_points:
            continue
        judged += 1
        anomaly = score_metric(metric, value, baseline, warning, critical)
        if anomaly is None or anomaly.direction not in directions:
            continue
        if abs(value - anomaly.baseline_median) >= min_change[metric]:
            anomalies.append(anomaly)
    if not judged:
        return Assessment(
            enough_history=False,
            reason=f"{len(ordered) - 1} earlier intervals; at least {min_points} are needed",
            latest_at=latest.taken_at,
            points=len(ordered),
        )
    return Assessment(tuple(anomalies), latest_at=latest.taken_at, points=len(ordered))


def score_metric(metric, value, baseline, warning, critical):
    """The Anomaly of `value` against the `baseline` values of `metric`, or None when its
    robust z-score stays under `warning` in either direction."""
    center = median(baseline)
    mad = median(abs(x - center) for x in baseline)
    mad = max(mad, MAD_FLOOR_FRACTION * abs(center), MAD_FLOOR_ABSOLUTE)
    score = CONSISTENCY * (value - center) / mad
    severity = severity_of(abs(score), warning, critical)
    if severity is None:
        return None
    return Anomaly(metric, value, center, mad, score, severity, "up" if score > 0 else "down")


def cached_assess(database_id, fingerprint, load_points, *, version=None):
    """assess() through the `anomalies` cache, key `anomalies:{database_id}:{fingerprint}`.

    `load_points` is called only on a miss; window and minimum come from the settings
    ANOMALY_WINDOW and ANOMALY_MIN_POINTS. Pass the newest snapshot id as `version` so a
    new collection invalidates the verdict.
    """
    key = f"anomalies:{database_id}:{fingerprint}"
    return caches["anomalies"].get_or_set(
        key,
        lambda: assess(
            load_points(), window=settings.ANOMALY_WINDOW, min_points=settings.ANOMALY_MIN_POINTS
        ),
        version=version,
    )


@dataclass(frozen=True)
class QueryAnomaly:
    """An anomaly with the query it belongs to, for the list across queries."""

    query: object  # whatever identifies the query for the caller (fingerprint, Query row)
    anomaly: Anomaly
    latest_at: datetime | None = None


def current_anomalies(assessments):
    """Every anomaly of `{query: Assessment}`, critical first, then by |score|."""
    found = [
        QueryAnomaly(query, anomaly, assessment.latest_at)
        for query, assessment in assessments.items()
        for anomaly in assessment.anomalies
    ]
    found.sort(key=lambda item: (SEVERITY_RANK[item.anomaly.severity], -abs(item.anomaly.score)))
    return found
