"""Feature extraction on real statements, and its cache (hits, batch misses, single flight)."""

import threading
import time

import pytest
from django.core.cache import caches

from pganalytics.analytics.features import (
    FEATURE_NAMES,
    FeatureRequest,
    IntervalStats,
    cached_features,
    extract_batch,
    extract_features,
)
from pganalytics.analytics.features import extract as shared_extractor


def nonzero(features):
    """The features set: those not at the value a missing source gives (1 for a plan's cost
    change, else 0)."""
    return {name: value for name, value in features.items()
            if value != (1.0 if name == "plan_cost_change" else 0.0)}


def test_every_vector_has_every_name_in_order_as_floats():
    features = extract_features("SELECT 1")
    assert tuple(features) == FEATURE_NAMES
    assert all(type(value) is float for value in features.values())


def test_report_query_with_joins_subqueries_aggregates_and_cte():
    sql = """
        WITH recent AS (SELECT * FROM orders WHERE created_at > now() - interval '1 day')
        SELECT DISTINCT c.name, count(*), sum(r.total) FILTER (WHERE r.total > $1)
        FROM recent r
        JOIN customers c ON c.id = r.customer_id
        LEFT JOIN (SELECT customer_id FROM refunds) f ON f.customer_id = c.id,
             regions g
        WHERE c.region_id = g.id AND (g.name = $2 OR g.id IN (SELECT id FROM hot_regions))
              AND NOT c.blocked
        GROUP BY c.name
        ORDER BY 2 DESC
        LIMIT 10
    """
    assert nonzero(extract_features(sql)) == {
        "stmt_select": 1.0,
        "tables": 5.0,  # orders, customers, refunds, regions, hot_regions (not the CTE)
        "joins": 3.0,  # JOIN, LEFT JOIN, and the comma before regions
        "subqueries": 2.0,  # the FROM subquery and the IN sublink
        "aggregates": 2.0,
        "group_by": 1.0,
        "order_by": 1.0,
        "limit": 1.0,
        "distinct": 1.0,
        "ctes": 1.0,
        "where_predicates": 5.0,  # created_at, region_id, g.name, IN, NOT blocked
        "parameters": 2.0,
    }


@pytest.mark.parametrize(
    "sql, expected",
    [
        ("INSERT INTO events (kind, at) VALUES ($1, $2)",
         {"stmt_insert": 1.0, "tables": 1.0, "parameters": 2.0}),
        ("UPDATE accounts a SET balance = a.balance - t.amount FROM transfers t"
         " WHERE t.account_id = a.id AND t.id = $1",
         {"stmt_update": 1.0, "tables": 2.0, "joins": 1.0, "where_predicates": 2.0,
          "parameters": 1.0}),
        ("DELETE FROM sessions s USING users u WHERE s.user_id = u.id AND u.deleted",
         {"stmt_delete": 1.0, "tables": 2.0, "joins": 1.0, "where_predicates": 2.0}),
        ("VALUES (1), (2)", {"stmt_select": 1.0}),
        ("CREATE INDEX ON orders (customer_id)", {"stmt_other": 1.0, "tables": 1.0}),
        ("SELECT id, row_number() OVER (ORDER BY id), max(id) OVER () FROM t",
         {"stmt_select": 1.0, "tables": 1.0}),  # window functions are not aggregates
        ("SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY total) FROM orders",
         {"stmt_select": 1.0, "tables": 1.0, "aggregates": 1.0}),
    ],
)
def test_statement_types_and_counts(sql, expected):
    assert nonzero(extract_features(sql)) == expected


def test_unparseable_text_is_flagged_not_raised():
    stats = {"calls": 6, "interval_seconds": 60}
    features = extract_features("SELEC * FROM orders WHERE", stats=stats)
    assert features["parse_error"] == 1.0
    assert features["tables"] == 0.0 and features["stmt_select"] == 0.0
    assert features["has_stats"] == 1.0 and features["calls_per_minute"] == 6.0


def nested_not(depth):
    return "SELECT * FROM orders WHERE " + "NOT (" * depth + "id = $1" + ")" * depth


def test_deeply_nested_conditions_are_counted():
    assert nonzero(extract_features(nested_not(200))) == {  # deeper than recursion goes
        "stmt_select": 1.0, "tables": 1.0, "where_predicates": 1.0, "parameters": 1.0,
    }


def test_nesting_too_deep_to_read_is_flagged_not_raised():
    assert nonzero(extract_features(nested_not(1000))) == {"parse_error": 1.0}


def test_interval_statistics():
    stats = IntervalStats(calls=300, interval_seconds=600, mean_ms=12.5, stddev_ms=3.0,
                          rows=1500, shared_blks_hit=900, shared_blks_read=100)
    features = extract_features("SELECT * FROM orders WHERE id = $1", stats=stats)
    assert features["has_stats"] == 1.0 and features["has_plan"] == 0.0
    assert features["calls_per_minute"] == 30.0
    assert (features["mean_ms"], features["stddev_ms"]) == (12.5, 3.0)
    assert features["rows_per_call"] == 5.0
    assert features["block_hit_ratio"] == 0.9


def test_statistics_without_calls_or_blocks_give_no_division_error():
    features = extract_features("SELECT 1", stats={"calls": 0, "interval_seconds": 0})
    assert features["calls_per_minute"] == 0.0 and features["rows_per_call"] == 0.0
    assert features["block_hit_ratio"] == 1.0  # nothing touched: nothing read from disk


def test_history_features_read_the_latest_8_intervals_with_calls():
    history = [IntervalStats(calls=calls, interval_seconds=60, mean_ms=mean)
               for calls, mean in [(50, 99.0), (1, 4.0), (2, 1.0), (1, 2.0), (4, 10.0),
                                   (2, 3.0), (2, 5.0), (1, 6.0), (3, 2.0)]]  # the first left out

    features = extract_features("SELECT 1", stats=history[-1], history=history)

    assert features["has_history"] == 1.0 and features["recent_intervals"] == 8.0
    assert features["recent_median_ms"] == 3.5  # of 1 2 2 3 4 5 6 10
    assert features["recent_spread_ms"] == 1.5  # of 0.5 2.5 1.5 6.5 0.5 1.5 2.5 1.5
    assert features["recent_mean_ms"] == 76.0 / 16  # 76 ms over 16 calls
    assert features["previous_mean_ms"] == 6.0
    assert features["calls_trend"] == 3 / 2  # the median of 1 2 1 4 2 2 1 3 calls a minute
    alone = extract_features("SELECT 1", stats=history[0], history=history[:1])
    assert (alone["recent_intervals"], alone["previous_mean_ms"], alone["calls_trend"]) == (
        1.0, 0.0, 1.0)
    assert extract_features("SELECT 1")["has_history"] == 0.0


def test_plan_features():
    plan = [{"Plan": {
        "Node Type": "Hash Join", "Total Cost": 420.5, "Plan Rows": 37,
        "Plans": [
            {"Node Type": "Seq Scan", "Relation Name": "orders", "Plan Rows": 10000},
            {"Node Type": "Hash", "Plans": [
                {"Node Type": "Seq Scan", "Relation Name": "customers", "Plan Rows": 100},
            ]},
        ],
    }}]
    features = extract_features("SELECT 1", plan=plan)
    assert features["has_plan"] == 1.0
    assert features["plan_seq_scans"] == 2.0
    assert (features["plan_total_cost"], features["plan_rows"]) == (420.5, 37.0)


def counting_extractor(delay=0.0):
    """A cached extractor over extract_features, and the list of statements it computed."""
    caches["features"].clear()
    computed = []

    @cached_features()
    def extractor(sql, stats=None, plan=None, history=()):
        computed.append(sql)
        time.sleep(delay)
        return extract_features(sql, stats, plan, history)

    return extractor, computed


@pytest.fixture
def counted():
    return counting_extractor()


def test_second_call_is_a_cache_hit(counted):
    extractor, computed = counted
    first = extractor("SELECT * FROM orders WHERE id = 1")
    hits = caches["features"].metrics()["hits"]
    second = extractor("SELECT * FROM orders WHERE id = 2")  # same fingerprint
    assert second == first and computed == ["SELECT * FROM orders WHERE id = 1"]
    assert caches["features"].metrics()["hits"] == hits + 1
    extractor("SELECT * FROM orders WHERE id = 2", scenario="optimized")
    assert len(computed) == 2  # another scenario, another key


def test_version_moves_the_key(counted):
    extractor, computed = counted
    extractor("SELECT 1", version=1)
    extractor("SELECT 1", version=2)
    assert len(computed) == 2


def test_unknown_scenario_is_rejected(counted):
    extractor, _ = counted
    with pytest.raises(ValueError, match="scenario"):
        extractor("SELECT 1", scenario="someday")


def test_batch_computes_only_the_misses_and_keeps_input_order(counted):
    extractor, computed = counted
    extractor("SELECT * FROM a")
    extractor("SELECT * FROM b", scenario="optimized")
    computed.clear()
    requests = [
        FeatureRequest("SELECT * FROM c JOIN d ON true"),
        FeatureRequest("SELECT * FROM a"),
        FeatureRequest("SELECT * FROM b", scenario="optimized"),
        FeatureRequest("SELECT * FROM e WHERE x = 1"),
        FeatureRequest("SELECT * FROM e WHERE x = 2"),  # same key as the one before
    ]
    results = extractor.batch(requests)
    assert computed == ["SELECT * FROM c JOIN d ON true", "SELECT * FROM e WHERE x = 1"]
    assert [r["tables"] for r in results] == [2.0, 1.0, 1.0, 1.0, 1.0]
    assert results[3] == results[4]
    computed.clear()
    assert extractor.batch(requests) == results and computed == []


def test_extract_batch_computes_only_the_misses_in_request_order(monkeypatch):
    caches["features"].clear()
    computed = []
    extract = shared_extractor.extract

    def counted(sql, stats=None, plan=None, history=()):
        computed.append(sql)
        return extract(sql, stats, plan, history)

    monkeypatch.setattr(shared_extractor, "extract", counted)
    shared_extractor("SELECT * FROM orders WHERE id = $1")
    shared_extractor("SELECT count(*) FROM refunds", scenario="optimized")
    requests = [
        FeatureRequest("SELECT * FROM orders o JOIN customers c ON c.id = o.customer_id"),
        FeatureRequest("SELECT * FROM orders WHERE id = $1"),
        FeatureRequest("SELECT count(*) FROM refunds", scenario="optimized"),
        FeatureRequest("DELETE FROM sessions WHERE expires < now()"),
    ]
    computed.clear()
    results = extract_batch(iter(requests))
    assert computed == [requests[0].sql, requests[3].sql]
    assert results == [extract_features(request.sql) for request in requests]


def test_concurrent_misses_of_one_key_compute_once():
    slow_extractor, calls = counting_extractor(delay=0.05)
    start = threading.Barrier(10)
    results = []

    def worker():
        start.wait()
        results.append(slow_extractor("SELECT * FROM orders WHERE id = 1"))

    threads = [threading.Thread(target=worker) for _ in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(calls) == 1 and len(results) == 10
    assert all(result == results[0] for result in results)
