"""The latency model's training: examples from the stored history (target: the next interval
with calls), a split by time that never mixes it, both baselines computed right, a model on a
generated history measured against them, acceptance, and a Predictor that pickles and
predicts a batch at once."""

import io
import pickle
from datetime import timedelta

import numpy as np
import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from mlservice import store
from mlservice.management.commands.bench_model import generate
from mlservice.predictor import Z_80, BaselinePredictor
from mlservice.training import Examples, evaluate, load_examples, split, train
from pganalytics.analytics.collector import COUNTERS, Reading
from pganalytics.analytics.collector import store as store_snapshot
from pganalytics.analytics.features import (
    FEATURE_NAMES,
    IntervalStats,
    extract_features,
    query_features,
)
from pganalytics.models import MonitoredDatabase, PlanSample, Query, QueryStat

LOOKUP = "SELECT name FROM customers WHERE id = $1"
REPORT = "SELECT status, count(*) FROM orders GROUP BY status"
MINUTE = timedelta(minutes=1)
STDDEV_MS = 0.5  # every statement's standard deviation, as the server keeps it
BATCH = 500


def reading(moment, cumulative):
    """A Reading of {text: [calls, total ms]} cumulative counters."""
    rows = []
    for text, (calls, total_ms) in cumulative.items():
        counters = dict.fromkeys(COUNTERS, 0)
        counters.update(calls=calls, total_exec_time=total_ms, mean_exec_time=total_ms / calls,
                        stddev_exec_time=STDDEV_MS, rows=calls, shared_blks_hit=3 * calls,
                        shared_blks_read=calls)
        rows.append((text, 10, None, *counters.values()))
    return Reading(taken_at=moment, stats_reset=None, rows=rows)


def store_history(name, start, series):
    """A monitored database with a snapshot a minute from `start`: the first one sees each
    statement of `series` once (1 ms), then interval i adds `series[text][i]`, a (calls,
    mean ms) pair, or nothing for None."""
    database = MonitoredDatabase.objects.create(name=name, dsn="host=127.0.0.1 port=1")
    cumulative = {text: [1, 1.0] for text in series}
    store_snapshot(database, reading(start, cumulative), started=0.0)
    for step in range(max(len(intervals) for intervals in series.values())):
        for text, intervals in series.items():
            if step < len(intervals) and intervals[step]:
                calls, mean_ms = intervals[step]
                cumulative[text][0] += calls
                cumulative[text][1] += calls * mean_ms
        store_snapshot(database, reading(start + (step + 1) * MINUTE, cumulative), started=0.0)
    return database


def test_examples_target_the_next_interval_with_calls(db):
    start = timezone.now() - timedelta(hours=1)
    store_history("tiny", start, {
        LOOKUP: [(2, 1.0), (1, 2.0), None, (4, 4.0), (1, 8.0)],
        REPORT: [(1, 10.0), None, None, (3, 30.0), None],
    })

    examples = load_examples(start)

    mean, calls = (examples.features[:, FEATURE_NAMES.index(name)]
                   for name in ("mean_ms", "calls_per_minute"))
    found = sorted(zip(mean.tolist(), calls.tolist(), examples.target_ms.tolist(),
                       (examples.target_time - start.timestamp()).round().tolist()))
    # (this interval's mean, its calls a minute, the next one's mean, when that one ended)
    assert found == [(1.0, 2.0, 2.0, 120.0), (2.0, 1.0, 4.0, 240.0), (4.0, 4.0, 8.0, 300.0),
                     (10.0, 1.0, 30.0, 240.0)]
    report = examples.features[mean == 10.0][0]
    first = IntervalStats(calls=1, interval_seconds=60.0, mean_ms=10.0, stddev_ms=STDDEV_MS,
                          rows=1, shared_blks_hit=3, shared_blks_read=1)
    expected = extract_features(REPORT, first, history=[first])
    assert report.tolist() == pytest.approx([expected[name] for name in FEATURE_NAMES])


def test_an_example_is_the_vector_query_features_gives_at_its_interval(db):
    """Training reads what a client sends (features.query_features): the history features
    included, computed from each statement's own intervals with calls up to that one."""
    start = timezone.now() - timedelta(hours=1)
    store_history("tiny", start, {
        LOOKUP: [(2, 1.0), (1, 2.0), None, (4, 4.0), (1, 8.0)] * 3,
        REPORT: [(1, 10.0), None, None, (3, 30.0), None, (5, 20.0)] * 2,
    })
    stats = QueryStat.objects.filter(delta_calls__gt=0).select_related("query")
    newest = {stat.query_id: stat.taken_at for stat in stats.order_by("taken_at")}
    lookup, report = (Query.objects.get(text=text) for text in (LOOKUP, REPORT))
    for query, minutes, seq_scans, cost in (
        (lookup, -30, 0, 8.3), (lookup, 4.5, 1, 1850.0), (lookup, 9, 0, 8.4),  # before the
        (report, 5, 1, 100.0), (report, 8, 1, 300.0),  # lookback, between intervals, at one's end
    ):
        PlanSample.objects.create(
            query=query, database_id=query.database_id, taken_at=start + minutes * MINUTE,
            plan_seq_scans=seq_scans, plan_total_cost=cost, plan_rows=1.0)

    examples = load_examples(start)

    expected = sorted(
        [features[name] for name in FEATURE_NAMES]
        for stat in stats if stat.taken_at < newest[stat.query_id]  # the last has no target
        for features in [query_features(stat.query, until=stat.taken_at)]
    )
    assert len(expected) == len(examples.features) == 11 + 5
    assert np.allclose(sorted(examples.features.tolist()), expected)
    assert {row[FEATURE_NAMES.index("recent_intervals")] for row in expected} == set(
        map(float, range(1, 9)))
    plans = [(row[FEATURE_NAMES.index("has_plan")], row[FEATURE_NAMES.index("plan_total_cost")])
             for row in examples.features.tolist()]
    # the lookup's 11 (minutes 1, 2, 4-7, 9-12, 14): 3 under the first plan, 3 under the
    # second, 5 from the interval the third was made at the end of; the report's 5 (minutes 1,
    # 4, 6, 7, 10): 2 before its first plan, 2 under it, 1 under the second
    assert sorted(plans) == sorted(
        [(1.0, 8.3)] * 3 + [(1.0, 1850.0)] * 3 + [(1.0, 8.4)] * 5
        + [(0.0, 0.0)] * 2 + [(1.0, 100.0)] * 2 + [(1.0, 300.0)])
    # against the plan at the oldest of its 8 intervals (the lookup's minutes 1, 1, ... 1, 2,
    # 4, 5), else the first made since (the report's at minute 5)
    changes = examples.features[:, FEATURE_NAMES.index("plan_cost_change")]
    assert sorted(changes.tolist()) == pytest.approx(sorted(
        [1.0] * 3 + [1850 / 8.3] * 3 + [8.4 / 8.3] * 4 + [8.4 / 1850] + [1.0] * 4 + [3.0]))


def test_the_median_of_the_last_8_keeps_to_each_statement(db):
    start = timezone.now() - timedelta(hours=1)
    store_history("tiny", start, {
        LOOKUP: [(1, float(mean)) for mean in range(1, 11)],
        REPORT: [(1, 100.0 * mean) for mean in range(1, 11)],
    })

    examples = load_examples(start)

    mean = examples.features[:, FEATURE_NAMES.index("mean_ms")]
    spread = {value: (median, low, high) for value, median, low, high in
              zip(mean.tolist(), *(column.tolist() for column in examples.median_8))}
    assert spread[1.0] == (1.0, 1.0, 1.0)  # nothing before it
    assert spread[3.0] == pytest.approx((2.0, 1.2, 2.8))  # 1, 2, 3
    assert spread[9.0] == pytest.approx((5.5, 2.7, 8.3))  # 2 ... 9: the latest 8
    assert spread[900.0] == pytest.approx((550.0, 270.0, 830.0))  # the other's own


def test_the_split_by_time_never_mixes_it():
    rng = np.random.default_rng(1)
    times = rng.integers(0, 50, 1000).astype(float)  # many examples share a moment

    fitting, validation, held_out = split(times)

    assert (fitting ^ validation ^ held_out).all() and not (fitting & validation).any()
    assert times[fitting].max() < times[validation].min()
    assert times[validation].max() < times[held_out].min()
    assert 0.15 < held_out.mean() < 0.25


def test_the_baselines_and_the_figures_on_hand_made_examples():
    columns = {name: FEATURE_NAMES.index(name) for name in ("mean_ms", "stddev_ms")}
    features = np.zeros((4, len(FEATURE_NAMES)))
    features[:, columns["mean_ms"]] = [10.0, 10.0, 20.0, 1.0]
    features[:, columns["stddev_ms"]] = [1.0, 1.0, 5.0, 2.0]
    examples = Examples(
        features=features,
        target_ms=np.array([11.0, 14.0, 16.0, 2.0]),
        target_time=np.arange(4.0),
        median_8=(np.array([12.0, 12.0, 18.0, 1.5]), np.array([9.0, 9.0, 17.0, 1.0]),
                  np.array([13.0, 13.0, 25.0, 3.0])),
    )
    everything = np.ones(4, dtype=bool)

    metrics = evaluate(BaselinePredictor(), examples, everything)

    assert metrics["last_value_mae_ms"] == pytest.approx((1 + 4 + 4 + 1) / 4)
    assert metrics["last_value_mdape"] == pytest.approx(np.median([1 / 11, 4 / 14, 4 / 16, 0.5]))
    # 10 ± 1.28: holds 11 only; 20 ± 6.4 holds 16; 1 ± 2.56 (from 0) holds 2
    assert metrics["last_value_coverage_80"] == 0.75
    assert metrics["median_8_mae_ms"] == pytest.approx((1 + 2 + 2 + 0.5) / 4)
    assert metrics["median_8_coverage_80"] == 0.5  # 14 is above 13, 16 below 17
    assert metrics["baseline"] == "median_8"
    assert metrics["baseline_mae_ms"] == metrics["median_8_mae_ms"]
    assert metrics["mae_ms"] == metrics["last_value_mae_ms"]  # the "model" is the baseline
    rows = [dict(zip(FEATURE_NAMES, row)) for row in features.tolist()]
    assert BaselinePredictor().predict(rows)[3] == pytest.approx((1.0, 0.0, 1.0 + 2 * Z_80))


def test_a_model_on_a_generated_history_against_the_baselines(db):
    """bench_model's history, a day of it for two databases. The model beats the median of the
    last 8 intervals, barely: measured here 0.990× its MAE (the goal, 0.9×, is not met), 0.79×
    the last value's, its 80 % interval holding 82.9 %, its median error 7.2 % (the median's
    7.6 %). On this history, knowing each statement's current level would give about 0.96×
    (bench_model). This fails if the model falls behind the median or its interval drifts."""
    generate(np.random.default_rng(9), databases=2, statements=24, intervals=1440,
             period=MINUTE, regressions=2)

    outcome = train(lookback_days=2)

    metrics = outcome.metrics
    assert metrics["samples"] > 50_000 and metrics["held_out"] > 10_000
    assert metrics["baseline"] == "median_8" and outcome.accepted
    assert metrics["mae_vs_best_baseline"] < 1.0
    assert metrics["mae_ms"] < 0.85 * metrics["last_value_mae_ms"]
    assert metrics["mdape"] < metrics["median_8_mdape"]
    assert 0.75 <= metrics["coverage_80"] <= 0.86
    assert outcome.reason.startswith("accepted: held-out MAE")


def test_with_the_suggested_index_the_model_predicts_the_latency_of_before_the_regression(db):
    """bench_model's history, every lookup and join of two databases losing its index, plans
    recorded as page views would; each regressed statement's current vector against the same
    with the plan under its index (bench_model's plan_effect). Measured here: predicted
    0.02-0.37× the current latency (mean 0.11×), measured 0.01-0.16× (0.06×), the plan
    elasticity learnt 0.66. The trees alone predicted 0.96-1.0×: the history holds some 40
    intervals whose plan had just become cheaper, of 58,000."""
    workloads = generate(np.random.default_rng(9), databases=2, statements=24, intervals=1440,
                         period=MINUTE, regressions=20)
    predictor = train(lookback_days=2).predictor

    ratios = [ratio for workload in workloads for ratio in workload.plan_effect(predictor)]

    predicted, measured = np.array(ratios).T
    assert len(ratios) == 20 and (measured < 0.25).all()
    assert 0.3 < predictor.plan_elasticity < 1
    assert (predicted < 0.5).all() and predicted.mean() < 0.25


@pytest.fixture
def alternating(db):
    """A history the model can learn and neither baseline can: each statement is busy (and
    slow) one minute, quiet (and fast) the next."""
    rng = np.random.default_rng(4)
    series = {
        text: [(20, scale * 10.0 * rng.uniform(0.9, 1.1)) if step % 2 else
               (2, scale * rng.uniform(0.9, 1.1)) for step in range(160)]
        for text, scale in ((LOOKUP, 1.0), (REPORT, 30.0))
    }
    return store_history("alternating", timezone.now() - timedelta(hours=3), series)


def test_a_model_that_beats_the_baselines_is_accepted_and_saved(alternating):
    out = io.StringIO()

    call_command("train_model", "--lookback-days=1", "--save", stdout=out)

    printed = out.getvalue()
    assert "accepted: held-out MAE" in printed and "median of last 8" in printed
    version, predictor = store.load(store.current_id())
    assert predictor.source == "model" and version.metrics["mae_ms"] < 0.5 * (
        version.metrics["baseline_mae_ms"])
    assert predictor.feature_names == FEATURE_NAMES


def test_too_little_history_trains_nothing(db):
    assert train(lookback_days=1).reason.startswith("not enough history: 0 examples")
    store_history("tiny", timezone.now() - timedelta(hours=1), {LOOKUP: [(1, 1.0)] * 20})

    outcome = train(lookback_days=1)

    assert (outcome.predictor, outcome.accepted) == (None, False)
    assert outcome.reason.startswith("not enough history: 19 examples")
    with pytest.raises(CommandError, match="not enough history"):
        call_command("train_model", "--lookback-days=1", stdout=io.StringIO())


@pytest.mark.parametrize("days", ["0", "-3", "3651", "1000000000"])
def test_train_model_refuses_a_lookback_out_of_range_with_a_message(db, days):
    with pytest.raises(CommandError, match="--lookback-days must be a whole number 1 to 3650"):
        call_command("train_model", f"--lookback-days={days}", stdout=io.StringIO())


def test_a_predictor_pickles_and_predicts_a_batch_at_once(alternating):
    predictor = train(lookback_days=1).predictor
    assert set(predictor.metrics) >= {"mae_ms", "baseline_mae_ms", "coverage_80", "samples"}
    stats = QueryStat.objects.filter(delta_calls__gt=0).select_related("query")
    rows = [query_features(stat.query, until=stat.taken_at) for stat in stats] * 2
    rows = rows[:BATCH]

    again = pickle.loads(pickle.dumps(predictor))

    batch = again.predict(rows)  # how fast, against one row at a time: bench_model
    singles = [again.predict([row])[0] for row in rows]
    assert len(batch) == BATCH and batch == predictor.predict(rows)
    assert np.allclose(batch, singles)
    assert all(low <= point <= high for point, low, high in batch)
    with pytest.raises(ValueError, match="finite"):
        again.predict([{**rows[0], "mean_ms": float("nan")}])
