"""The feature vector of a query, as the ML service consumes it: a flat `{name: float}`.

Four sources, each optional: the statement's parse tree (pglast's JSON tree, ~15x cheaper
to get than its Python node objects), one interval's statistics, the EXPLAIN plan, and the
statement's recent history (its latest RECENT_INTERVALS intervals with calls, that one last).
Whatever is missing reads 0 and its `has_*` flag says so (a change not known reads 1, none),
so every vector has every name.
`FEATURE_NAMES` is the contract with the model: append new names, never reorder or rename.
"""

import statistics
from dataclasses import dataclass

from django.core.cache import caches
from pglast import parser

from pganalytics.analytics import plan_history
from pganalytics.analytics.explain import highest_parameter, parse_tree, summarize, tree_nodes
from pganalytics.fingerprint import fingerprint
from pganalytics.models import QueryStat

FEATURE_NAMES = (
    # parse tree
    "parse_error",  # 1 when the text does not parse or nests too deeply to read (parse-tree
    # features are then 0)
    "stmt_select",  # one-hot statement type of the first statement (VALUES counts as select)
    "stmt_insert",
    "stmt_update",
    "stmt_delete",
    "stmt_other",  # DDL, utility, MERGE, ...
    "tables",  # table references (a self-join counts twice; CTE names are not tables)
    "joins",  # explicit JOINs, comma-separated FROM items, UPDATE ... FROM, DELETE ... USING
    "subqueries",  # sublinks (IN/EXISTS/scalar subqueries) and subqueries in FROM
    "aggregates",  # aggregate calls (known aggregate names, count(*), DISTINCT/FILTER args)
    "group_by",  # 1 when any level has GROUP BY
    "order_by",  # 1 when any level has ORDER BY
    "limit",  # 1 when any level has LIMIT / FETCH FIRST
    "distinct",  # 1 when any level has DISTINCT (or DISTINCT ON)
    "ctes",  # common table expressions
    "where_predicates",  # leaf conditions under WHERE, AND/OR/NOT flattened
    "parameters",  # highest $n: the statement's arity
    # one interval's statistics
    "has_stats",
    "calls_per_minute",
    "mean_ms",
    "stddev_ms",
    "rows_per_call",
    "block_hit_ratio",  # shared blocks found in cache / touched; 1 when none were touched
    # the EXPLAIN plan
    "has_plan",
    "plan_seq_scans",
    "plan_total_cost",
    "plan_rows",  # estimated rows of the top node
    # the recent history: the latest RECENT_INTERVALS intervals with calls, the one of the
    # statistics above last
    "has_history",
    "recent_intervals",  # how many there are (1 to RECENT_INTERVALS)
    "recent_median_ms",  # the median of their mean latencies
    "recent_spread_ms",  # the median absolute deviation of their mean latencies from it
    "recent_mean_ms",  # their total time / their calls: the mean of all their calls
    "previous_mean_ms",  # the mean latency of the one before the last; 0 when there is none
    "calls_trend",  # the last one's calls a minute / the median of theirs (1 when that is 0)
    # the plan against the one the recent history ran under
    "plan_cost_change",  # plan_total_cost / that of the plan those intervals ran under (the
    # newest PlanSample at or before the oldest of them, else the first since); 1: not known
)
RECENT_INTERVALS = 8
SCENARIOS = ("current", "optimized")
AGGREGATE_NAMES = frozenset({
    "array_agg", "avg", "bit_and", "bit_or", "bit_xor", "bool_and", "bool_or", "count",
    "every", "json_agg", "json_object_agg", "jsonb_agg", "jsonb_object_agg", "max", "min",
    "mode", "percentile_cont", "percentile_disc", "string_agg", "stddev", "stddev_pop",
    "stddev_samp", "sum", "var_pop", "var_samp", "variance", "xmlagg",
})
# The target of an UPDATE / DELETE is joined to each item of its FROM / USING list.
JOINED_TO_TARGET = {"UpdateStmt": "fromClause", "DeleteStmt": "usingClause"}
STATEMENT_FEATURES = {
    "SelectStmt": "stmt_select",
    "InsertStmt": "stmt_insert",
    "UpdateStmt": "stmt_update",
    "DeleteStmt": "stmt_delete",
}


@dataclass(frozen=True)
class IntervalStats:
    """One snapshot interval of a query (the deltas pg_stat_statements gives per interval)."""

    calls: float
    interval_seconds: float
    mean_ms: float = 0.0
    stddev_ms: float = 0.0
    rows: float = 0.0
    shared_blks_hit: float = 0.0
    shared_blks_read: float = 0.0


@dataclass(frozen=True)
class FeatureRequest:
    """One item of extract_batch."""

    sql: str
    stats: IntervalStats | dict | None = None
    plan: list | None = None
    scenario: str = "current"
    history: tuple = ()


def extract_features(sql, stats=None, plan=None, history=()):
    """The feature dict of `sql` (names in FEATURE_NAMES order); never raises for bad SQL.

    `stats` is an IntervalStats or a dict with its field names; `plan` the EXPLAIN
    (FORMAT JSON) result; `history` IntervalStats as history_features reads them.
    """
    features = dict.fromkeys(FEATURE_NAMES, 0.0)
    features["plan_cost_change"] = 1.0  # until with_plan_change knows better
    features.update(tree_features(sql))
    if stats is not None:
        features.update(stats_features(stats))
    if plan:
        features.update(plan_features(plan))
    if history:
        features.update(history_features(history))
    return features


def query_features(query, plan=None, until=None):
    """The vector the ML service was trained on, for `query` as of `until` (default: now):
    its text, its newest interval with calls (up to `until`), the intervals with calls before
    that one (recent_history), and `plan` if given, else the plan features of its newest
    PlanSample up to `until` (plan_history: training reads those), its cost against that of
    the plan its recent history ran under (with_plan_change). What a prediction panel sends,
    so that the model sees what it learnt from."""
    history = recent_history(query, until)
    features = extract_features(query.text, history[-1] if history else None, plan, history)
    sample = None if plan else plan_history.newest_at(query, until)
    if sample is not None:
        features.update(has_plan=1.0, **{
            name: getattr(sample, name) for name in plan_history.PLAN_FIELDS})
    return with_plan_change(features, plan_cost_before(query, until))


def recent_stats(query, until=None):
    """QueryStat rows of `query`'s latest RECENT_INTERVALS intervals with calls up to `until`,
    newest first. The rows mlservice.training reads: calls and a mean latency above 0."""
    stats = QueryStat.objects.filter(query=query, delta_calls__gt=0, delta_mean_exec_time__gt=0)
    if until is not None:
        stats = stats.filter(taken_at__lte=until)
    return list(stats.order_by("-taken_at")[:RECENT_INTERVALS])


def recent_history(query, until=None):
    """IntervalStats of recent_stats(), oldest first."""
    return [interval_stats(stat) for stat in reversed(recent_stats(query, until))]


def plan_cost_before(query, until=None):
    """The total cost of the plan `query`'s recent history ran under (as of `until`):
    plan_history.history_plan from the oldest of recent_stats(); None when not known."""
    stats = recent_stats(query, until)
    sample = stats and plan_history.history_plan(query, stats[-1].taken_at, until)
    return sample.plan_total_cost if sample else None


def with_plan_change(features, cost_before):
    """`features` with plan_cost_change: their plan's cost over `cost_before` (the cost of
    the plan their history ran under), 1 when either is not known. Training learns from the
    plans that changed how much latency followed; a plan under a suggested index is such a
    change."""
    change = 1.0
    if features["has_plan"] and cost_before:
        change = features["plan_total_cost"] / cost_before
    return {**features, "plan_cost_change": change}


def interval_stats(stat):
    """The features' view of one QueryStat's interval (stddev is the server's cumulative one)."""
    return IntervalStats(
        calls=stat.delta_calls,
        interval_seconds=stat.interval_seconds or 0.0,
        mean_ms=stat.delta_mean_exec_time or 0.0,
        stddev_ms=stat.stddev_exec_time,
        rows=stat.delta_rows,
        shared_blks_hit=stat.delta_shared_blks_hit,
        shared_blks_read=stat.delta_shared_blks_read,
    )


def tree_features(sql):
    try:
        tree = parse_tree(sql)
    except parser.ParseError:
        return {"parse_error": 1.0}
    statements = tree.get("stmts", [])
    first_kind = next(iter(statements[0]["stmt"])) if statements else ""
    counts = dict.fromkeys(
        ("tables", "joins", "subqueries", "aggregates", "group_by", "order_by", "limit",
         "distinct", "ctes", "where_predicates"),
        0,
    )
    counts["parameters"] = highest_parameter(tree)
    cte_names = {body["ctename"] for kind, body in tree_nodes(tree) if kind == "CommonTableExpr"}
    for kind, body in tree_nodes(tree):
        if kind == "RangeVar":
            names_a_cte = "schemaname" not in body and body["relname"] in cte_names
            counts["tables"] += not names_a_cte
        elif kind == "JoinExpr":
            counts["joins"] += 1
        elif kind in ("SubLink", "RangeSubselect"):
            counts["subqueries"] += 1
        elif kind == "FuncCall":
            counts["aggregates"] += is_aggregate(body)
        elif kind == "CommonTableExpr":
            counts["ctes"] += 1
        if kind in JOINED_TO_TARGET:
            counts["joins"] += len(body.get(JOINED_TO_TARGET[kind], []))
        elif kind == "SelectStmt":
            counts["joins"] += max(0, len(body.get("fromClause", [])) - 1)
        if kind in ("SelectStmt", "UpdateStmt", "DeleteStmt"):
            counts["where_predicates"] += predicate_count(body.get("whereClause"))
            counts["group_by"] |= "groupClause" in body
            counts["order_by"] |= "sortClause" in body
            counts["limit"] |= "limitCount" in body
            counts["distinct"] |= "distinctClause" in body
    statement_feature = STATEMENT_FEATURES.get(first_kind, "stmt_other")
    return {statement_feature: 1.0, **{name: float(value) for name, value in counts.items()}}


def is_aggregate(call):
    """An aggregate call; `count(*) OVER ()` is a window function and does not count."""
    if "over" in call:
        return False
    name = call["funcname"][-1].get("String", {}).get("sval", "")
    return bool(
        call.get("agg_star") or call.get("agg_distinct") or "agg_filter" in call
        or call.get("agg_within_group") or name.lower() in AGGREGATE_NAMES
    )


def predicate_count(condition):
    """Leaf conditions of a WHERE clause: `a = 1 AND (b OR NOT c)` has three.

    An explicit stack, not recursion: `NOT (NOT (...))` may nest hundreds deep.
    """
    count, pending = 0, [condition] if condition else []
    while pending:
        node = pending.pop()
        if "BoolExpr" in node:
            pending.extend(node["BoolExpr"]["args"])
        else:
            count += 1
    return count


def stats_features(stats):
    """Features of one interval; `block_hit_ratio` is 1.0 when no shared block was touched.

    1.0, not None: the model needs a number, and an interval that read nothing from disk
    is as good as all hits (the pages' services.hit_ratio shows None, "no ratio", instead).
    """
    if isinstance(stats, dict):
        stats = IntervalStats(**stats)
    touched = stats.shared_blks_hit + stats.shared_blks_read
    return {
        "has_stats": 1.0,
        "calls_per_minute": per_minute(stats),
        "mean_ms": float(stats.mean_ms or 0.0),
        "stddev_ms": float(stats.stddev_ms or 0.0),
        "rows_per_call": stats.rows / stats.calls if stats.calls else 0.0,
        "block_hit_ratio": stats.shared_blks_hit / touched if touched else 1.0,
    }


def history_features(history):
    """Features of a statement's recent history: `history` holds IntervalStats of its
    intervals with calls, oldest first, the one the vector describes last; the latest
    RECENT_INTERVALS are read. The median of their means is the better baseline the model is
    measured against (mlservice.training); the rest says how far to trust it."""
    recent = history[-RECENT_INTERVALS:]
    means = [stats.mean_ms for stats in recent]
    median = statistics.median(means)
    calls = sum(stats.calls for stats in recent)
    rates = [per_minute(stats) for stats in recent]
    usual_rate = statistics.median(rates)
    return {
        "has_history": 1.0,
        "recent_intervals": float(len(recent)),
        "recent_median_ms": float(median),
        "recent_spread_ms": float(statistics.median(abs(mean - median) for mean in means)),
        "recent_mean_ms": (
            sum(stats.mean_ms * stats.calls for stats in recent) / calls if calls else 0.0
        ),
        "previous_mean_ms": float(means[-2]) if len(means) > 1 else 0.0,
        "calls_trend": rates[-1] / usual_rate if usual_rate else 1.0,
    }


def per_minute(stats):
    return stats.calls * 60.0 / stats.interval_seconds if stats.interval_seconds else 0.0


def plan_features(plan):
    return {"has_plan": 1.0, **plan_history.plan_figures(summarize(plan))}


class CachedExtractor:
    """An extractor behind a named cache, key `features:{fingerprint}:{scenario}`.

    The key holds no statistics: callers pass the data version (the newest snapshot id)
    as `version`, so new statistics move every key at once. A single call goes through
    the backend's single-flight `get_or_set` (concurrent misses of one key compute once);
    a batch reads all keys in one `get_many` and computes only the misses.
    """

    def __init__(self, extract, cache_alias="features"):
        self.extract = extract
        self.cache_alias = cache_alias

    def key(self, sql, scenario):
        if scenario not in SCENARIOS:
            raise ValueError(f"scenario {scenario!r}: expected one of {', '.join(SCENARIOS)}")
        return f"features:{fingerprint(sql).fingerprint}:{scenario}"

    def __call__(self, sql, stats=None, plan=None, history=(), *, scenario="current",
                 version=None):
        cache = caches[self.cache_alias]
        key = self.key(sql, scenario)
        return cache.get_or_set(
            key, lambda: self.extract(sql, stats, plan, history), version=version
        )

    def batch(self, requests, *, version=None):
        """Features of each FeatureRequest, in input order; one computation per missing key."""
        cache = caches[self.cache_alias]
        keys = [self.key(request.sql, request.scenario) for request in requests]
        found = cache.get_many(keys, version=version)
        computed = {}
        for key, request in zip(keys, requests):
            if key not in found and key not in computed:
                computed[key] = self.extract(
                    request.sql, request.stats, request.plan, request.history
                )
        if computed:
            cache.set_many(computed, version=version)
        return [found[key] if key in found else computed[key] for key in keys]


def cached_features(cache_alias="features"):
    """Decorator: `@cached_features()` turns an extractor into a CachedExtractor."""
    return lambda extract: CachedExtractor(extract, cache_alias)


extract = cached_features()(extract_features)


def extract_batch(requests, *, version=None):
    """extract_features for many FeatureRequests through the `features` cache."""
    return extract.batch(list(requests), version=version)
