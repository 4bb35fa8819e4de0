"""Latency and call-rate anomalies: the latest interval with calls against a robust baseline.

The baseline of each metric is the median and MAD (median absolute deviation) of the
`window` intervals with calls before the latest one; the score is the robust z-score
0.6745 * (x - median) / MAD, which one outlier in the history cannot drag the way a mean
and standard deviation would. Two guards keep quiet series quiet: a MAD of 0 (a flat
history) is floored at a fraction of the median, and a change smaller than a minimum
absolute amount (0.01 ms -> 0.03 ms) is never an anomaly, however large its score.

An anomaly stays open while the regression lasts: it reports `since`, the first interval
of the run of anomalous intervals it ends, and the latest judged against the baseline
before that run (which the regression itself does not drag along).
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
    """One collected interval of one query; an idle one (no calls) has no latency: None."""

    taken_at: datetime
    mean_ms: float | None
    calls_per_minute: float


@dataclass(frozen=True)
class Anomaly:
    metric: str
    value: float
    baseline_median: float
    mad: float  # as used for the score (after the flat-history floor)
    score: float  # robust z-score, signed (negative: below the baseline)
    severity: str  # "warning" | "critical"
    direction: str  # "up" | "down"
    since: datetime  # when the run of anomalous intervals this one ends began


@dataclass(frozen=True)
class Assessment:
    """The verdict on a query's latest interval with calls; without enough history, `reason`
    says so. `points` counts the intervals with calls it was judged over."""

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
    """Assessment of the latest of `points` with calls against the up to `window` intervals
    with calls before it, each anomaly with the start of its run (see open_anomaly).

    Idle intervals (no calls) are left out for both metrics: neither judged nor part of a
    baseline. The call rate is thus the rate while the query runs: one called now and then
    is not a surge whenever it runs, one that stops being called is not a collapse, and
    idle collections neither open nor close an anomaly. A verdict needs `min_points`
    earlier intervals with calls; without them, the Assessment says so instead of
    reporting "no anomaly". `min_change` overrides MIN_CHANGE for some metrics.
    """
    ran = sorted(
        (point for point in points if point.mean_ms is not None), key=lambda point: point.taken_at
    )
    if not ran:
        return Assessment(enough_history=False, reason="no interval with calls yet")
    latest = ran[-1]
    if min(len(ran) - 1, window) < min_points:
        return Assessment(
            enough_history=False,
            reason=f"{len(ran) - 1} earlier intervals with calls; at least {min_points} are needed",
            latest_at=latest.taken_at,
            points=len(ran),
        )
    limits = {
        "warning": warning,
        "critical": critical,
        "min_change": {**MIN_CHANGE, **(min_change or {})},
    }
    found = [open_anomaly(metric, ran, window, min_points, **limits) for metric in DIRECTIONS]
    return Assessment(
        tuple(anomaly for anomaly in found if anomaly), latest_at=latest.taken_at, points=len(ran)
    )


def open_anomaly(metric, ran, window, min_points, **limits):
    """The open Anomaly of `metric` at the latest of `ran` (intervals with calls, oldest first).

    The latest is judged against the `window` intervals before it: a normal one costs that
    one baseline. An anomalous one ends a run, traced back one interval at a time while all
    the intervals from the earlier start on are anomalous in one direction against the
    (at least `min_points`) intervals before that start; the Anomaly is the latest's against
    the baseline before the run. A regression lasting over about half the window is in the
    latest's own baseline: the new normal.
    """

    def run_from(start):
        baseline = ran[max(0, start - window):start]
        if len(baseline) < min_points:
            return None
        return judge_run(metric, ran[start:], baseline, **limits)

    start = len(ran) - 1
    anomaly = run_from(start)
    while anomaly and (earlier := run_from(start - 1)):
        start, anomaly = start - 1, earlier
    return anomaly


def judge_run(metric, run, baseline, **limits):
    """The Anomaly of the last of `run` (Points) when all of `run` is anomalous in its direction
    against the median and MAD of `baseline` (Points), else None; `since` is the first of `run`.
    """
    values = [getattr(point, metric) for point in baseline]
    center = median(values)
    mad = median(abs(x - center) for x in values)
    mad = max(mad, MAD_FLOOR_FRACTION * abs(center), MAD_FLOOR_ABSOLUTE)
    found = [
        score_metric(metric, getattr(point, metric), center, mad, run[0].taken_at, **limits)
        for point in run
    ]
    latest = found[-1]
    if latest and all(anomaly and anomaly.direction == latest.direction for anomaly in found):
        return latest
    return None


def score_metric(metric, value, center, mad, since, *, warning, critical, min_change):
    """The Anomaly of `value` against a baseline's median `center` and `mad`, or None: a robust
    z-score under `warning`, a direction that does not matter for `metric`, or a change under
    its minimum."""
    score = CONSISTENCY * (value - center) / mad
    severity = severity_of(abs(score), warning, critical)
    direction = "up" if score > 0 else "down"
    if (
        severity is None
        or direction not in DIRECTIONS[metric]
        or abs(value - center) < min_change[metric]
    ):
        return None
    return Anomaly(metric, value, center, mad, score, severity, direction, since)


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
