"""Anomaly detection on constructed histories, and its cache."""

from datetime import datetime, timedelta, timezone

import pytest
from django.core.cache import caches

from pganalytics.analytics.anomalies import Point, assess, cached_assess, current_anomalies

START = datetime(2026, 1, 1, tzinfo=timezone.utc)
STABLE_MS = [10.0, 12.0, 9.0, 11.0, 8.0, 10.0, 13.0, 9.0, 11.0, 10.0, 12.0, 9.0]  # median 10, MAD 1
STABLE_CALLS = [60.0, 62.0, 58.0, 61.0, 59.0, 60.0, 63.0, 57.0, 60.0, 61.0, 59.0, 60.0]


def history(mean_ms, calls_per_minute=None):
    """Points five minutes apart; calls default to a steady 60/min, and to none where the mean
    is None (an idle interval)."""
    calls_per_minute = calls_per_minute or [0.0 if ms is None else 60.0 for ms in mean_ms]
    return [
        Point(START + timedelta(minutes=5 * i), ms, calls)
        for i, (ms, calls) in enumerate(zip(mean_ms, calls_per_minute))
    ]


def run(points, **overrides):
    window, min_points = overrides.pop("window", 48), overrides.pop("min_points", 8)
    return list(assess(points, window=window, min_points=min_points, **overrides).anomalies)


def test_stable_series_has_no_anomaly():
    assert run(history(STABLE_MS + [12.5], STABLE_CALLS + [62.0])) == []


def test_latency_spike_is_critical():
    (anomaly,) = run(history(STABLE_MS + [45.0]))
    assert (anomaly.metric, anomaly.severity, anomaly.direction) == ("mean_ms", "critical", "up")
    assert anomaly.value == 45.0 and anomaly.baseline_median == 10.0
    assert anomaly.mad == 1.0
    assert anomaly.score == pytest.approx(0.6745 * 35.0)


def test_moderate_rise_is_a_warning():
    (anomaly,) = run(history(STABLE_MS + [16.0]))
    assert anomaly.severity == "warning" and anomaly.score == pytest.approx(0.6745 * 6)


def test_latency_drop_is_not_an_anomaly():
    assert run(history(STABLE_MS + [1.0])) == []


def test_call_rate_up_and_down_are_both_anomalies():
    (surge,) = run(history(STABLE_MS + [10.0], STABLE_CALLS + [600.0]))
    assert (surge.metric, surge.direction, surge.severity) == ("calls_per_minute", "up", "critical")
    (collapse,) = run(history(STABLE_MS + [10.0], STABLE_CALLS + [5.0]))
    assert (collapse.direction, collapse.severity) == ("down", "critical")
    assert collapse.score < 0


def test_too_few_points_gives_no_verdict_and_says_so():
    points = history(STABLE_MS[:5] + [500.0])
    assert run(points) == []
    assessment = assess(points, window=48, min_points=8)
    assert not assessment.enough_history
    assert assessment.reason == "5 earlier intervals with calls; at least 8 are needed"
    assert not assess([], window=48, min_points=8).enough_history


def test_flat_history_does_not_explode_on_tiny_change():
    flat = [10.0] * 12
    assert run(history(flat + [10.2])) == []  # MAD 0 floored at 5% of the median
    (anomaly,) = run(history(flat + [20.0]))
    assert anomaly.mad == pytest.approx(0.5) and anomaly.severity == "critical"


def test_tiny_latencies_are_not_anomalies_however_large_the_score():
    assert run(history([0.01] * 12 + [0.03])) == []
    fast = [0.20, 0.22, 0.19, 0.21, 0.20, 0.18, 0.20, 0.21, 0.19, 0.20]
    assert run(history(fast + [0.9])) == []  # under the 1 ms default minimum change
    (anomaly,) = run(history(fast + [0.9]), min_change={"mean_ms": 0.5})
    assert anomaly.severity == "critical"


def test_the_call_rate_is_the_rate_while_the_query_runs():
    """Idle intervals are no baseline for the call rate either: a query that starts being
    called has no verdict yet, one called now and then is no surge whenever it runs, and one
    that stops being called is no collapse."""
    starts = assess(history([None] * 12 + [5.0]), window=48, min_points=8)
    assert starts.reason == "0 earlier intervals with calls; at least 8 are needed"
    assert run(history([5.0 if i % 4 == 0 else None for i in range(37)])) == []
    assert run(history(STABLE_MS + [None] * 5)) == []


def test_an_anomaly_stays_open_through_idle_intervals():
    points = history(STABLE_MS + [45.0] + [None] * 3)
    (anomaly,) = run(points)
    assert (anomaly.metric, anomaly.value, anomaly.since) == ("mean_ms", 45.0, points[12].taken_at)
    assert assess(points, window=48, min_points=8).latest_at == points[12].taken_at


def test_a_lasting_regression_is_judged_against_the_baseline_before_it():
    points = history(STABLE_MS + [45.0, None, 44.0, None, 46.0])
    (anomaly,) = run(points)
    assert anomaly.since == points[12].taken_at
    assert (anomaly.value, anomaly.baseline_median, anomaly.mad) == (46.0, 10.0, 1.0)
    assert anomaly.score == pytest.approx(0.6745 * 36)


def test_one_interval_with_calls_back_within_the_baseline_closes_it():
    assert run(history(STABLE_MS + [45.0, None, 11.0])) == []
    assert run(history(STABLE_MS + [45.0, 11.0, None, None])) == []


def test_a_run_is_anomalous_throughout_in_one_direction():
    points = history(STABLE_MS + [45.0, 10.0, 45.0])
    assert run(points)[0].since == points[14].taken_at  # the normal interval ended the first run
    points = history(STABLE_MS + [10.0, 10.0], STABLE_CALLS + [600.0, 5.0])
    (collapse,) = run(points)
    assert (collapse.direction, collapse.since) == ("down", points[13].taken_at)


def test_a_regression_lasting_over_half_the_window_becomes_the_baseline():
    (anomaly,) = run(history(STABLE_MS + [45.0] * 11), window=24)
    assert anomaly.baseline_median == 10.0
    assert run(history(STABLE_MS + [45.0] * 13), window=24) == []


def test_window_limits_the_baseline_to_recent_points():
    slow_then_fast = [100.0] * 20 + [10.0] * 10 + [40.0]
    assert run(history(slow_then_fast), window=48) == []  # the old 100 ms period dominates
    (anomaly,) = run(history(slow_then_fast), window=10)
    assert anomaly.baseline_median == 10.0


def test_points_without_latency_are_skipped_and_order_does_not_matter():
    points = history(STABLE_MS + [45.0])
    idle = Point(START - timedelta(hours=1), None, 0.0)
    (anomaly,) = run(list(reversed(points)) + [idle])
    assert anomaly.metric == "mean_ms"


def test_current_anomalies_lists_critical_first():
    assessments = {
        "calm": assess(history(STABLE_MS + [10.0]), window=48, min_points=8),
        "warm": assess(history(STABLE_MS + [16.0]), window=48, min_points=8),
        "hot": assess(history(STABLE_MS + [45.0], STABLE_CALLS + [600.0]), window=48, min_points=8),
    }
    listed = current_anomalies(assessments)
    assert [(item.query, item.anomaly.severity) for item in listed] == [
        ("hot", "critical"), ("hot", "critical"), ("warm", "warning"),
    ]
    assert listed[0].anomaly.score >= listed[1].anomaly.score
    assert listed[0].latest_at == START + timedelta(minutes=60)


def test_cached_assess_loads_history_once_per_version(settings):
    settings.ANOMALY_WINDOW, settings.ANOMALY_MIN_POINTS = 48, 8
    caches["anomalies"].clear()
    loads = []

    def load_points():
        loads.append(1)
        return history(STABLE_MS + [45.0])

    first = cached_assess(3, "abc", load_points, version=7)
    again = cached_assess(3, "abc", load_points, version=7)
    assert first == again and len(first.anomalies) == 1 and len(loads) == 1
    cached_assess(3, "abc", load_points, version=8)
    assert len(loads) == 2
    assert caches["anomalies"].has_key("anomalies:3:abc", version=8)
