"""The latency model: trained on the collected history, judged against two baselines.

Examples come from the raw intervals of every monitored database within the lookback: for each
fingerprint (Query) and each interval with calls, the features of that interval
(features.extract_features of the statement's text, the interval's statistics and the
intervals with calls before it, and the plan features of the statement's newest PlanSample at
or before it, none before its first: as features.query_features gives them to a client), and
as target the fingerprint's mean latency in its next interval with calls. Plans are learnt
only from those the app made (plan_history). A statement's plan changes seldom, too seldom for
the trees to learn from; so every kept plan change (before the validation part) is measured
(latency before and after), and their median, the plan elasticity, moves every prediction by
its plan's cost change (plan_cost_change): what tells a plan under a suggested index from
today's.

Raw intervals, not the hourly rollups: the service predicts a statement's next collection
interval from its current one, and an hour's mean is another, smoother quantity (whose
rollups keep no standard deviation); a model fitted on hours would draw intervals too narrow
for the intervals it is asked about. The lookback reaches as far back as RAW_RETENTION keeps
raw intervals.

Split by time, never shuffled across it: the examples whose target is among the newest
HELD_OUT of target times are held out; of the rest, the newest VALIDATION stop the boosting
and calibrate the 80 % interval, the older ones fit. The held-out part only measures.
"""

import math
from dataclasses import dataclass
from datetime import timedelta

import numpy as np
from django.db import connection, transaction
from django.utils import timezone
from numpy.lib.stride_tricks import sliding_window_view
from sklearn.ensemble import HistGradientBoostingRegressor

from mlservice.predictor import BaselinePredictor, Forest, Predictor, feature_matrix, log_ms
from pganalytics.analytics.features import (
    FEATURE_NAMES,
    RECENT_INTERVALS,
    IntervalStats,
    extract_features,
    history_features,
    stats_features,
)
from pganalytics.analytics.plan_history import PLAN_FIELDS
from pganalytics.models import PlanSample, Query

HELD_OUT = 0.2
VALIDATION = 0.2
RECENT = RECENT_INTERVALS  # the second baseline: the median of the latest RECENT intervals
MIN_EXAMPLES = 200
# Chosen before measuring, but for the size of the trees: on the validation part of
# bench_model's history, 6 levels did as well as unbounded ones, and a rate of 0.2 with up to
# 150 trees came within 0.3 % of the MAE of 0.1 with up to 300, with half the trees; each tree
# and level is work in every prediction (predictor.Forest). Nothing is chosen on the held-out
# part. The validation part stops the boosting when 20 more trees do not improve it. With the
# history features, none of 20 or 200 samples a leaf, a rate of 0.1 with 300 trees, unbounded
# depth, 63 leaves, more regularisation or examples weighted by their latency did better on
# the validation part than these by more than 0.2 % of MAE.
BOOSTING = {
    "learning_rate": 0.2,
    "max_iter": 150,
    "max_leaf_nodes": 31,
    "max_depth": 6,
    "min_samples_leaf": 50,
    "l2_regularization": 1.0,
    "early_stopping": True,
    "n_iter_no_change": 20,
    "random_state": 0,
}
# The models learn the log of the next latency over this feature's value, and the point is
# their median (absolute error: MAE is the measure). Chosen on the validation part of
# bench_model's history (fitted on the older 80 % of the fitting part, stopped on its newest
# 20 %; MAE over the median of the last 8's): from mean_ms 1.07×, from recent_median_ms
# 1.015×, from recent_mean_ms 1.004× (1.022× with squared error).
REFERENCE = "recent_mean_ms"
# The models of a Predictor, each with what the progress bar says while it is fitted.
MODELS = (
    ("fitting the latency", {"loss": "absolute_error"}),
    ("fitting the 10 % quantile", {"loss": "quantile", "quantile": 0.1}),
    ("fitting the 90 % quantile", {"loss": "quantile", "quantile": 0.9}),
)
# A statement's intervals with calls, by fingerprint then time; the same columns as
# IntervalStats, after the fingerprint and the end of the interval (epoch seconds).
INTERVALS = """
SELECT query_id, extract(epoch FROM taken_at)::float8, delta_calls,
       coalesce(interval_seconds, 0), delta_mean_exec_time, stddev_exec_time, delta_rows,
       delta_shared_blks_hit, delta_shared_blks_read
FROM pganalytics_querystat
WHERE taken_at >= %s AND delta_calls > 0 AND delta_mean_exec_time > 0
ORDER BY query_id, taken_at
"""
# The plans those intervals may have had: each statement's since the start, and its newest
# one before, by fingerprint then time; the figures in PLAN_FIELDS order.
PLANS = f"""
SELECT * FROM (
    SELECT query_id, extract(epoch FROM taken_at)::float8 AS at, {", ".join(PLAN_FIELDS)}
    FROM {PlanSample._meta.db_table} WHERE taken_at >= %(since)s
    UNION ALL (
    SELECT DISTINCT ON (query_id) query_id, extract(epoch FROM taken_at)::float8,
           {", ".join(PLAN_FIELDS)}
    FROM {PlanSample._meta.db_table} WHERE taken_at < %(since)s
    ORDER BY query_id, taken_at DESC)
) AS samples ORDER BY query_id, at
"""
PLAN_COLUMNS = [FEATURE_NAMES.index(name) for name in ("has_plan", *PLAN_FIELDS)]
CHUNK = 10_000
BASELINES = {"last_value": "last value", "median_8": f"median of last {RECENT}"}


@dataclass
class Examples:
    """One example per interval with calls that has a next one, by fingerprint then time."""

    features: np.ndarray  # a row per example, a column per FEATURE_NAMES
    target_ms: np.ndarray  # the mean latency of the next interval with calls
    target_time: np.ndarray  # when that interval ended (epoch seconds)
    median_8: tuple  # (median, 10th, 90th percentile) of the latest RECENT intervals' means
    plan_changes: np.ndarray = None  # plan_changes() of the history


@dataclass
class TrainingOutcome:
    predictor: Predictor | None
    accepted: bool  # its held-out MAE beats the better baseline's: it may replace the current
    metrics: dict
    reason: str


def train(lookback_days, progress=None):
    """Fit a Predictor on the last `lookback_days` of history; `progress(step, fraction)` is
    told how far it got."""
    progress = progress or (lambda step, fraction: None)
    progress("reading history", 0.0)
    examples = load_examples(timezone.now() - timedelta(days=lookback_days), progress)
    samples = len(examples.target_ms)
    fitting, validation, held_out = split(examples.target_time)
    if samples < MIN_EXAMPLES or not (fitting.any() and validation.any()):
        reason = (f"not enough history: {samples} examples in the last {lookback_days} days; "
                  f"training needs {MIN_EXAMPLES}, spread over time")
        return TrainingOutcome(None, False, {"samples": samples}, reason)
    features = examples.features
    change = np.log(examples.target_ms) - log_ms(features[:, FEATURE_NAMES.index(REFERENCE)])
    elasticity = plan_elasticity(examples.plan_changes, examples.target_time[validation].min())
    # The predictor moves every prediction by the plan shift: the trees learn what it leaves,
    # or a plan whose cost follows a growing table would move the prediction twice.
    shift = elasticity * np.log(np.maximum(  # as predictor.plan_change reads it
        features[:, FEATURE_NAMES.index("plan_cost_change")], 1e-9))
    rest = change - shift
    models = []
    for number, (step, loss) in enumerate(MODELS):
        progress(step, 0.4 + 0.15 * number)
        models.append(fit(features[fitting], rest[fitting], features[validation],
                          rest[validation], **loss))
    forest = Forest(models, sample=features[validation])
    _, low, high = forest.predict(features[validation])
    widening = conformal_widening(low, high, rest[validation], coverage=0.8)
    progress("measuring on the held-out part", 0.9)
    predictor = Predictor(forest, widening, metrics={}, reference=REFERENCE,
                          plan_elasticity=elasticity)
    predictor.metrics = metrics = evaluate(predictor, examples, held_out)
    metrics.update(samples=samples, fitted=int(fitting.sum()), lookback_days=lookback_days,
                   plan_elasticity=elasticity)
    accepted = metrics["mae_ms"] < metrics["baseline_mae_ms"]
    progress("done", 1.0)
    return TrainingOutcome(predictor, accepted, metrics, verdict(metrics, accepted))


def load_examples(since, progress=None):
    """Examples of every fingerprint's intervals with calls since `since`."""
    with transaction.atomic(), connection.chunked_cursor() as cursor:
        cursor.execute(INTERVALS, [since])
        chunks = [np.array(chunk, dtype=float) for chunk in iter(
            lambda: cursor.fetchmany(CHUNK), [])]
        cursor.execute(PLANS, {"since": since})
        samples = np.array(cursor.fetchall(), dtype=float).reshape(-1, 2 + len(PLAN_FIELDS))
    intervals = np.concatenate(chunks) if chunks else np.empty((0, 9))
    query_ids, times, means = intervals[:, 0], intervals[:, 1], intervals[:, 4]
    has_next = query_ids == np.append(query_ids[1:], np.nan)  # the next row is its own
    return Examples(
        features=features_of(intervals[has_next], samples, progress),
        target_ms=np.roll(means, -1)[has_next],
        target_time=np.roll(times, -1)[has_next],
        median_8=tuple(column[has_next] for column in recent_spread(query_ids, means)),
        plan_changes=plan_changes(intervals, samples),
    )


def features_of(intervals, samples, progress=None):
    """The feature matrix of `intervals` (by statement, then time, each statement's from its
    first in the lookback): what extract_features(text, IntervalStats, history=the intervals up
    to this one) gives, each statement's text parsed once (a parse costs 0.2-0.4 ms, the rest
    microseconds), with the plan features of `samples` (rows of PLANS) as plans_at reads them,
    and the plan's cost against that of the plan its history ran under (as
    features.plan_cost_before reads it)."""
    query_ids = intervals[:, 0].astype(int).tolist()
    texts = Query.objects.filter(pk__in=set(query_ids)).values_list("pk", "text")
    trees = {query_id: extract_features(text) for query_id, text in texts}
    stats = [IntervalStats(*row) for row in intervals[:, 2:].tolist()]
    rows_before = np.arange(len(stats))
    firsts = np.maximum.accumulate(  # the index of each row's statement's first row
        np.where(np.diff(intervals[:, 0], prepend=np.nan) != 0, rows_before, 0)
    )
    starts = np.maximum(firsts, rows_before - RECENT_INTERVALS + 1).tolist()
    blocks = [np.empty((0, len(FEATURE_NAMES)))]
    for start in range(0, len(query_ids), CHUNK):
        rows = [{**trees[query_ids[row]], **stats_features(stats[row]),
                 **history_features(stats[starts[row]:row + 1])}
                for row in range(start, min(start + CHUNK, len(stats)))]
        blocks.append(feature_matrix(rows, FEATURE_NAMES))
        if progress:
            progress("features", 0.1 + 0.3 * start / len(query_ids))
    matrix = np.concatenate(blocks)
    matrix[:, PLAN_COLUMNS] = plans_at(intervals[:, 0], intervals[:, 1], samples)
    known, cost_before = plans_at(
        intervals[:, 0], intervals[starts, 1], samples, until=intervals[:, 1])[:, [0, 2]].T
    cost = matrix[:, FEATURE_NAMES.index("plan_total_cost")]
    has_plan = matrix[:, PLAN_COLUMNS[0]] > 0
    matrix[:, FEATURE_NAMES.index("plan_cost_change")] = np.where(  # as with_plan_change
        has_plan & (known > 0) & (cost_before != 0), cost / np.where(cost_before, cost_before, 1),
        1.0)
    return matrix


def plans_at(query_ids, times, samples, until=None):
    """has_plan and the PLAN_FIELDS of each (statement, time), sorted by statement: those of
    the statement's newest sample (rows of PLANS) at or before the time, else with `until` (a
    time each) its first one if made by then (plan_history.history_plan), else zeros."""
    columns = np.zeros((len(query_ids), 1 + len(PLAN_FIELDS)))
    owners = samples[:, 0]
    for query_id in np.unique(owners):
        first, last = np.searchsorted(query_ids, [query_id, query_id + 0.5])
        own = samples[slice(*np.searchsorted(owners, [query_id, query_id + 0.5]))]
        newest = np.searchsorted(own[:, 1], times[first:last], side="right") - 1
        if until is not None:
            newest[(newest < 0) & (own[0, 1] <= until[first:last])] = 0
        known = newest >= 0
        columns[first:last][known] = np.column_stack(
            [np.ones(known.sum()), own[newest[known], 2:]])
    return columns


def recent_spread(query_ids, means):
    """(median, 10th, 90th percentile) of each interval's mean latency and those of up to
    RECENT - 1 intervals before it of the same statement (intervals by statement, then time)."""
    windows, owners = (  # padded in front, the first window (all padding) left out
        sliding_window_view(np.concatenate([np.full(RECENT, pad), values]), RECENT)[1:]
        for pad, values in ((np.nan, means), (-1.0, query_ids))
    )
    recent = np.where(owners == query_ids[:, None], windows, np.nan)
    return (np.nanmedian(recent, axis=1), *np.nanpercentile(recent, [10, 90], axis=1))


def split(target_time):
    """(fitting, validation, held_out): masks of the examples by their target's time. The
    newest HELD_OUT are held out, the newest VALIDATION of the others validate."""
    held_out = newest(target_time, HELD_OUT, np.ones(len(target_time), dtype=bool))
    validation = newest(target_time, VALIDATION, ~held_out)
    return ~held_out & ~validation, validation, held_out


def newest(times, fraction, among):
    """Those of `among` whose time is among the newest `fraction` of theirs."""
    if not among.any():
        return among
    return among & (times >= np.quantile(times[among], 1 - fraction))


def plan_changes(intervals, samples):
    """(when measured, log latency change, log cost change) of each time a statement's kept plan
    became at least twice or half as costly: the median of the mean latencies of its RECENT
    intervals with calls after the newer plan was made (measured when the last of them ended)
    over that of its RECENT up to the older one's."""
    changes = []
    owners = samples[:, 0]
    cost = 2 + PLAN_FIELDS.index("plan_total_cost")
    for query_id in np.unique(owners):
        own = samples[owners == query_id]
        first, last = np.searchsorted(intervals[:, 0], [query_id, query_id + 0.5])
        times, means = intervals[first:last, 1], intervals[first:last, 4]
        for old, new in zip(own[:-1], own[1:]):
            moved = np.log(new[cost] / old[cost]) if old[cost] > 0 < new[cost] else 0.0
            before, after = means[times <= old[1]][-RECENT:], means[times >= new[1]][:RECENT]
            if abs(moved) >= np.log(2) and len(before) and len(after):
                ended = times[times >= new[1]][:RECENT][-1]
                changes.append((ended, np.log(np.median(after) / np.median(before)), moved))
    return np.array(changes).reshape(-1, 3)


def plan_elasticity(changes, until):
    """How latency follows a plan's cost (latency ∝ cost ^ this, 0 to 1): the median ratio of
    the log changes of `changes` (plan_changes) made before `until`. A statement's plan
    changes seldom: too few examples for a leaf of their own, but one figure for all
    statements, which the `optimized` scenario needs (a change of plan it never had)."""
    known = changes[changes[:, 0] < until]
    if not len(known):
        return 0.0
    return float(np.clip(np.median(known[:, 1] / known[:, 2]), 0.0, 1.0))


def fit(features, change, validation_features, validation_change, **loss):
    model = HistGradientBoostingRegressor(**loss, **BOOSTING)
    return model.fit(features, change, X_val=validation_features, y_val=validation_change)


def conformal_widening(low, high, actual, coverage):
    """How far to move [low, high] out (in, when negative) for it to hold `coverage` of
    `actual`: conformalized quantile regression (Romano et al., 2019), on the validation part."""
    scores = np.maximum(low - actual, actual - high)
    level = min(1.0, coverage * (len(scores) + 1) / len(scores))
    return float(np.quantile(scores, level))


def evaluate(predictor, examples, held_out):
    """Held-out MAE, median absolute percentage error and 80 % interval coverage of the
    model and of both baselines on the same examples; the better baseline's MAE as
    `baseline_mae_ms`."""
    features, actual = examples.features[held_out], examples.target_ms[held_out]
    answers = {
        "model": predictor.predict_matrix(features),
        "last_value": BaselinePredictor().predict_matrix(features),
        "median_8": tuple(column[held_out] for column in examples.median_8),
    }
    metrics = {"held_out": int(held_out.sum())}
    for name, (point, low, high) in answers.items():
        prefix = "" if name == "model" else f"{name}_"
        error = np.abs(point - actual)
        metrics[f"{prefix}mae_ms"] = float(error.mean())
        metrics[f"{prefix}mdape"] = float(np.median(error / actual))
        metrics[f"{prefix}coverage_80"] = float(np.mean((low <= actual) & (actual <= high)))
    best = min(BASELINES, key=lambda name: metrics[f"{name}_mae_ms"])
    metrics.update(baseline=best, baseline_mae_ms=metrics[f"{best}_mae_ms"])
    metrics["mae_vs_best_baseline"] = (
        metrics["mae_ms"] / metrics["baseline_mae_ms"] if metrics["baseline_mae_ms"] else math.inf
    )
    return metrics


def verdict(metrics, accepted):
    """Why the model may replace the current one, or not."""
    comparison = (
        f"held-out MAE {metrics['mae_ms']:.3f} ms against {metrics['baseline_mae_ms']:.3f} ms "
        f"for the {BASELINES[metrics['baseline']]} ({metrics['mae_vs_best_baseline']:.2f}×)"
    )
    if accepted:
        return f"accepted: {comparison}"
    return f"rejected, it does not beat the better baseline: {comparison}"
