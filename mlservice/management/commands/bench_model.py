"""`manage.py bench_model [--databases 3] [--statements 24] [--days 2] [--json]`: the latency
model on a realistic history, against both baselines, and how fast it predicts.

In a scratch app database of its own (bench_history's scratch_app_database), `--databases`
monitored databases get `--statements` statements each, of the shapes an application runs
(point lookups, joins, aggregates and reports, writes), collected every `--period` seconds for
`--days` up to now: generated in numpy and written with COPY, not run in real time. The load
follows a daily cycle (each database's users in a time zone of their own), with a trend and
noise of its own per database; latency follows the load (contention), tables grow under the
scans, each statement drifts slowly, checkpoints slow a whole database for an interval now and
then, and `--regressions` statements lose an index for a while or for good (a step up in
latency and block reads). Plans (PlanSample) come as page views would record them: now and then
at a rate of each statement's own, and within minutes of each plan change, with the costs a
real planner gives those shapes (PLANS: how they were measured). Each interval's mean is that
of its calls, each call's latency drawn around the statement's level.

Then train() as the service's jobs do, the held-out figures of the model and both baselines
printed, the predicted latency of the statements that lost their index with it back (their
features with the plan under the index, as the advisor's what-if plan gives it) against their
current one, beside the measured ratio, and Predictor.predict timed for one row and for a
batch of 500 (median of `--repeat` runs).
"""

import json
import math
import statistics
import time
import timeit
from dataclasses import dataclass
from datetime import timedelta

import numpy as np
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone
from scipy.signal import lfilter
from tqdm import tqdm

from mlservice.management.commands.train_model import metrics_table, progress_bar
from mlservice.training import HELD_OUT, load_examples, train
from pganalytics.analytics import history
from pganalytics.analytics.collector import COUNTERS, Reading, copy_rows, store
from pganalytics.analytics.features import (
    FEATURE_NAMES,
    plan_cost_before,
    query_features,
    with_plan_change,
)
from pganalytics.management.commands.bench_history import scratch_app_database
from pganalytics.analytics.plan_history import PLAN_FIELDS
from pganalytics.models import MonitoredDatabase, PlanSample, Query, QueryStat, Snapshot


@dataclass(frozen=True)
class Kind:
    """A kind of statement: medians of its figures (each statement draws its own around
    them), how much each call varies, how latency grows with load and with its tables."""

    latency_ms: float
    calls_per_minute: float
    rows_per_call: float
    blocks_per_call: float
    call_variation: float  # coefficient of variation of one call's latency
    contention: float  # latency × (1 + contention × (load - 1)²) above the usual load
    growth: float  # up to this much slower by the end of the history: its tables grow
    regression: tuple = ()  # (low, high) latency factor when its index is dropped


KINDS = {
    "lookup": Kind(0.1, 200, 1, 4, 0.5, 0.1, 0.0, (20, 60)),
    "join": Kind(5, 20, 30, 300, 0.6, 0.3, 0.3, (5, 15)),
    "aggregate": Kind(200, 0.6, 20, 40_000, 0.3, 0.5, 0.4),
    "write": Kind(0.5, 50, 1, 8, 0.8, 0.6, 0.0),
}
# {n} tells a statement's variants apart: a table's name is not part of a fingerprint where
# the table has an alias, the alias is.
SHAPES = (
    ("lookup", "SELECT id, name, email FROM customers{n} WHERE id = $1"),
    ("lookup", "SELECT * FROM products{n} WHERE sku = $1"),
    ("lookup", "SELECT balance FROM accounts{n} WHERE account_id = $1 FOR UPDATE"),
    ("join", "SELECT o{n}.id, o{n}.total, c{n}.name FROM orders{n} o{n} JOIN customers{n} c{n}"
             " ON c{n}.id = o{n}.customer_id WHERE o{n}.created_at > $1"
             " ORDER BY o{n}.created_at DESC LIMIT $2"),
    ("join", "SELECT p{n}.name, sum(i{n}.quantity) FROM order_items{n} i{n} JOIN products{n} p{n}"
             " ON p{n}.id = i{n}.product_id JOIN orders{n} o{n} ON o{n}.id = i{n}.order_id"
             " WHERE o{n}.customer_id = $1 GROUP BY p{n}.name"),
    ("aggregate", "SELECT date_trunc('hour', created_at), count(*), sum(total)"
                  " FROM orders{n} WHERE created_at > $1 GROUP BY 1 ORDER BY 1"),
    ("aggregate", "SELECT status, count(*), avg(total) FROM invoices{n} GROUP BY status"),
    ("aggregate", "WITH recent AS (SELECT customer_id, sum(total) AS spent FROM orders{n}"
                  " WHERE created_at > $1 GROUP BY customer_id) SELECT c.name, r.spent"
                  " FROM recent r JOIN customers{n} c ON c.id = r.customer_id"
                  " ORDER BY r.spent DESC LIMIT 20"),
    ("write", "INSERT INTO orders{n} (customer_id, total, created_at) VALUES ($1, $2, $3)"),
    ("write", "UPDATE accounts{n} SET balance = balance + $1 WHERE account_id = $2"),
    ("write", "DELETE FROM sessions{n} WHERE expires_at < $1"),
    ("write", "INSERT INTO events{n} (kind, payload) SELECT $1, $2 WHERE NOT EXISTS"
              " (SELECT 1 FROM events{n} WHERE kind = $1 AND payload = $2)"),
)
# Each shape's generic plan (plan_seq_scans, plan_total_cost, plan_rows), with its indexes
# and, for those that lose one, without it: EXPLAIN (FORMAT JSON) of the shapes above as the
# app plans them (PREPARE, force_generic_plan, NULL parameters), read with explain.summarize,
# on PostgreSQL 15 tables of 100,000 customers and accounts, 20,000 products, 300,000
# orders and events, 900,000 order items, 200,000 invoices and 100,000 sessions, analysed,
# indexed on their keys, orders(customer_id), orders(created_at), order_items(order_id),
# sessions(expires_at) and events(kind, payload); the regressed plan with the customers',
# products' (sku) and accounts' key, orders(created_at) and orders(customer_id) dropped.
PLANS = (
    ((0, 8.31, 1), (1, 2272.0, 1)),
    ((0, 8.3, 1), (1, 417.0, 1)),
    ((0, 8.32, 1), (1, 1791.01, 1)),
    ((0, 3160.5, 9966), (1, 14012.82, 9966)),
    ((0, 65.51, 9), (1, 5445.5, 9)),
    ((0, 14644.24, 100_000), None),
    ((1, 4333.31, 3), None),
    ((1, 17599.41, 20), None),
    ((0, 0.01, 0), None),
    ((0, 8.31, 0), None),
    ((0, 1332.29, 0), None),
    ((0, 8.45, 0), None),
)
LOOKUP_COST = 10  # a plan cheaper than this fetches a row by an index: its tables' size aside
PLAN_VIEWS_PER_HOUR = (1 / 12, 1)  # how often a statement's page is planned, at random
PLAN_LOOK_MINUTES = (0.5, 3)  # and how soon after its plan changes someone looks
CHECKPOINT_SHARE = 0.01  # intervals in which a checkpoint slows a whole database
BATCH = 500


class Command(BaseCommand):
    help = "Train the latency model on a generated history; model vs baselines, predict timings."

    def add_arguments(self, parser):
        parser.add_argument("--databases", type=int, default=3)
        parser.add_argument("--statements", type=int, default=24, help="per database")
        parser.add_argument("--days", type=float, default=2.0)
        parser.add_argument("--period", type=int, default=60, help="seconds between snapshots")
        parser.add_argument("--regressions", type=int, default=4,
                            help="lookups and joins that lose an index at some point")
        parser.add_argument("--repeat", type=int, default=100, help="timed runs per prediction")
        parser.add_argument("--seed", type=int, default=9)
        parser.add_argument("--json", action="store_true", help="one JSON object on stdout")

    def handle(self, *args, databases, statements, days, period, regressions, repeat, seed,
               json, **options):
        intervals = int(days * 86400 / period)
        if databases < 1 or statements < 1 or intervals < 100 or period < 1 or repeat < 1:
            raise CommandError("needs --databases >= 1, --statements >= 1, --repeat >= 1 and "
                               "at least 100 snapshots (--days × 86400 / --period)")
        scratch = f"{settings.DATABASES['default']['NAME']}_bench_model"
        with scratch_app_database(scratch):
            call_command("migrate", verbosity=0)
            started = time.monotonic()
            workloads = generate(np.random.default_rng(seed), databases, statements, intervals,
                                 timedelta(seconds=period), regressions, quiet=json)
            generated = time.monotonic() - started
            with progress_bar(disable=json) as progress:  # a day more: all of it, however
                outcome = train(math.ceil(days) + 1, progress)  # long generating it took
            trained = time.monotonic() - started - generated
            if outcome.predictor is None:
                raise CommandError(outcome.reason)
            rows = feature_rows(load_examples(timezone.now() - timedelta(days=days)), BATCH)
            effect = [ratio for workload in workloads
                      for ratio in workload.plan_effect(outcome.predictor)]
        since = int(intervals * (1 - HELD_OUT))
        floor = mean_error(workload.noise(since) for workload in workloads)
        bound = mean_error(workload.current_level_error(since) for workload in workloads)
        figures = {
            **outcome.metrics,
            "accepted": outcome.accepted,
            "noise_floor_mae_ms": floor,
            "noise_floor_vs_best_baseline": floor / outcome.metrics["baseline_mae_ms"],
            "current_level_mae_ms": bound,
            "current_level_vs_best_baseline": bound / outcome.metrics["baseline_mae_ms"],
            "databases": databases,
            "statements": databases * statements,
            "snapshots": intervals,
            "generated_seconds": round(generated, 1),
            "train_seconds": round(trained, 1),
            "regressed_statements": len(effect),
            "optimized_vs_current": float(np.mean([p for p, _ in effect])) if effect else None,
            "measured_before_vs_regressed": (
                float(np.mean([m for _, m in effect])) if effect else None),
            "predict_ms": median_ms(repeat, lambda: outcome.predictor.predict(rows[:1])),
            "batch500_ms": median_ms(repeat, lambda: outcome.predictor.predict(rows)),
        }
        self.report(figures, outcome.reason, json)

    def report(self, figures, reason, as_json):
        if as_json:
            self.stdout.write(json.dumps(figures))
            return
        self.stdout.write(
            f"bench_model: {figures['databases']} databases, {figures['statements']} "
            f"statements, {figures['snapshots']:,} snapshots each, generated in "
            f"{figures['generated_seconds']} s, trained in {figures['train_seconds']} s"
        )
        for line in metrics_table(figures):
            self.stdout.write(line)
        self.stdout.write(
            f"{'knowing the level':<20}{figures['current_level_mae_ms']:>12.3f}   (each "
            "statement's true level in its interval, known to the generator alone: "
            f"{figures['current_level_vs_best_baseline']:.2f}× the better baseline's MAE)"
        )
        self.stdout.write(
            f"{'knowing the next':<20}{figures['noise_floor_mae_ms']:>12.3f}   (its level in the "
            f"next one, checkpoints included, which nothing foresees: the noise floor, "
            f"{figures['noise_floor_vs_best_baseline']:.2f}×)"
        )
        self.stdout.write(reason)
        if figures["regressed_statements"]:
            self.stdout.write(
                f"with the index back, {figures['regressed_statements']} statements that lost "
                f"it, at their last interval without it: predicted "
                f"{figures['optimized_vs_current']:.2f}× their current latency (the what-if "
                f"plan's features against their plan's; plan elasticity learnt "
                f"{figures['plan_elasticity']:.2f}), measured "
                f"{figures['measured_before_vs_regressed']:.2f}× (their hour before losing it "
                "against their hour up to then)"
            )
        goals = (figures["mae_vs_best_baseline"] <= 0.9, 0.75 <= figures["coverage_80"] <= 0.85)
        self.stdout.write(
            f"goals: MAE ≤ 0.9× the better baseline's: {'met' if goals[0] else 'NOT met'} "
            f"({figures['mae_vs_best_baseline']:.2f}×); 80 % interval holding 75-85 %: "
            f"{'met' if goals[1] else 'NOT met'} ({figures['coverage_80']:.1%})"
        )
        self.stdout.write(
            f"Predictor.predict, median of runs: one row {figures['predict_ms']:.2f} ms, "
            f"a batch of {BATCH} {figures['batch500_ms']:.2f} ms"
        )


def generate(rng, databases, statements, intervals, period, regressions, quiet=True):
    """`databases` monitored databases of `statements` statements each, their snapshots every
    `period` and every interval with calls of the `intervals` up to now; their Workloads."""
    start = timezone.now() - intervals * period
    texts = [SHAPES[number % len(SHAPES)][1].format(n=f"_{number // len(SHAPES)}"
                                                    if number >= len(SHAPES) else "")
             for number in range(statements)]
    kinds = [KINDS[SHAPES[number % len(SHAPES)][0]] for number in range(statements)]
    plans = [PLANS[number % len(SHAPES)] for number in range(statements)]
    viewing = np.random.default_rng(rng.bit_generator.seed_seq.spawn(1)[0])  # the history's
    # own draws stay those of a history without plans
    indexed = [(database, number) for database in range(databases)
               for number, kind in enumerate(kinds) if kind.regression]
    broken = rng.choice(indexed, size=min(regressions, len(indexed)), replace=False).tolist()
    for day in range(int(intervals * period / timedelta(days=1)) + 2):
        history.ensure_partition(QueryStat, start + day * timedelta(days=1))
    workloads = []
    for number in tqdm(range(databases), desc="databases generated", disable=quiet):
        database = MonitoredDatabase.objects.create(name=f"bench-{number}", dsn="host=bench")
        workload = Workload(rng, kinds, intervals, period,
                            [which for owner, which in broken if owner == number], plans, start)
        store(database, workload.reading(texts, start), started=0.0)
        by_text = dict(Query.objects.filter(database=database).values_list("text", "pk"))
        snapshots = Snapshot.objects.bulk_create(
            Snapshot(database=database, taken_at=start + (step + 1) * period,
                     statement_count=statements, duration_ms=0.0)
            for step in range(intervals)
        )
        workload.queries = [by_text[text] for text in texts]
        copy_rows(QueryStat, workload.query_stats(
            database, workload.queries, snapshots, period))
        PlanSample.objects.bulk_create(workload.plan_samples(viewing, database))
        workloads.append(workload)
    return workloads


def mean_error(errors):
    """The mean of arrays of absolute errors, the Workloads' (about the held-out intervals)."""
    return float(np.concatenate(list(errors)).mean())


class Workload:
    """One database's statements over `intervals`: arrays with a row per statement and a
    column per interval."""

    def __init__(self, rng, kinds, intervals, period, broken, plans=(), start=None):
        minutes = period / timedelta(minutes=1)
        self.plans, self.start, self.period = plans, start, period  # its shapes' PLANS
        spread = rng.lognormal(0, 0.5, (5, len(kinds), 1))

        def figure(name):
            return np.array([[getattr(kind, name)] for kind in kinds])

        self.base_ms = figure("latency_ms") * spread[0]
        self.rate = figure("calls_per_minute") * spread[1] * minutes
        self.rows_per_call = figure("rows_per_call") * spread[2]
        self.variation = figure("call_variation") * spread[3] ** 0.4
        progress = np.arange(intervals) / intervals
        hours = rng.uniform(0, 24) + np.arange(intervals) * minutes / 60  # its users' clock
        load = (
            (1 + 0.6 * np.sin(2 * np.pi * (hours - 9) / 24))
            * (1 + rng.uniform(-0.1, 0.3) * progress)
            * np.exp(ar1(rng, 0.9, 0.05, (1, intervals)))
        )
        checkpoint = rng.random(intervals) < CHECKPOINT_SHARE
        slowdown = np.where(checkpoint, rng.uniform(1.5, 4, intervals), 1.0)
        regression = np.ones((len(kinds), intervals))
        for number in broken:
            low, high = kinds[number].regression
            dropped = rng.integers(int(0.2 * intervals), int(0.95 * intervals))
            restored = intervals  # for good, or after 2 to 12 hours:
            if rng.random() < 0.5:
                restored = dropped + int(rng.integers(120, 720) / minutes)
            regression[number, dropped:restored] = rng.uniform(low, high)
        growth = 1 + figure("growth") * rng.uniform(0, 1, (len(kinds), 1)) * progress
        self.level_ms = (
            self.base_ms * growth * regression * slowdown
            * (1 + figure("contention") * spread[4] * np.maximum(load - 1, 0) ** 2)
            * np.exp(ar1(rng, 0.99, 0.03, (len(kinds), intervals)))
        )
        self.calls = rng.poisson(self.rate * load)
        ran = self.calls > 0
        totals = rng.gamma(np.maximum(self.calls, 1) / self.variation ** 2,
                           self.level_ms * self.variation ** 2)
        self.total_ms = np.where(ran, totals, 0.0)
        self.blocks = figure("blocks_per_call") * spread[2] * growth * regression * self.calls
        self.read_share = np.where(regression > 1, 0.3, np.where(checkpoint, 0.1, 0.01))
        self.prior_calls = np.round(self.rate[:, 0] * 1440 / minutes) + 1  # a day before
        self.regressed = regression > 1
        self.table_size = spread[2] * growth  # what its plans' costs grow with
        self.minutes = minutes
        self.queries = []  # their Query ids, once stored

    def plan_figures(self, number, step, regressed):
        """{PLAN_FIELDS name: value} of statement `number`'s plan in interval `step`, with
        its index or without (`regressed`)."""
        seq_scans, cost, rows = self.plans[number][regressed]
        if cost >= LOOKUP_COST:
            cost *= self.table_size[number, step]
        return dict(zip(PLAN_FIELDS, (float(seq_scans), float(cost), float(rows))))

    def plan_times(self, rng, number):
        """When statement `number` was planned, in intervals from the start (interval i is
        (i, i + 1]): a page view now and then, at a rate of its own, and one soon after each
        change of its plan (someone looks at the regressed query, or at the one whose index
        was just made)."""
        length = self.regressed.shape[1]
        per_interval = np.exp(rng.uniform(*np.log(PLAN_VIEWS_PER_HOUR))) * self.minutes / 60
        views = rng.uniform(0, length, rng.poisson(per_interval * length))
        changes = np.flatnonzero(np.diff(self.regressed[number].astype(int))) + 1
        looks = changes + rng.uniform(*PLAN_LOOK_MINUTES, len(changes)) / self.minutes
        return np.sort(np.concatenate([views, looks[looks < length]]))

    def plan_samples(self, rng, database):
        """PlanSample rows of every statement, as page views would have recorded them."""
        return [
            PlanSample(query_id=query, database=database,
                       taken_at=self.start + moment * self.period,
                       **self.plan_figures(number, int(moment),
                                           bool(self.regressed[number, int(moment)])))
            for number, query in enumerate(self.queries)
            for moment in self.plan_times(rng, number)
        ]

    def plan_effect(self, predictor):
        """(predicted, measured) latency ratios of each statement that lost its index, at its
        last interval with calls without it: the prediction from its features with the plan
        it had (query_features) and from the same with its plan under the index (as the
        advisor's what-if plan gives it), and its mean latency in the hour before it lost the
        index over that in the hour up to then."""
        ratios = []
        for number in np.flatnonzero(self.regressed.any(axis=1)):
            without = np.flatnonzero(self.regressed[number])
            step = np.flatnonzero(self.regressed[number] & (self.calls[number] > 0))[-1]
            query, until = Query.objects.get(pk=self.queries[number]), self.start + (
                step + 1) * self.period
            current = query_features(query, until=until)
            optimized = with_plan_change(
                {**current, "has_plan": 1.0, **self.plan_figures(number, step, False)},
                plan_cost_before(query, until))
            (now, *_), (after, *_) = predictor.predict([current, optimized])
            hour = int(60 / self.minutes)
            before = slice(max(without[0] - hour, 0), without[0])
            regressed = slice(max(step + 1 - hour, without[0]), step + 1)
            ratios.append((after / now, self.mean_ms(number, before)
                           / self.mean_ms(number, regressed)))
        return ratios

    def mean_ms(self, number, intervals):
        """Statement `number`'s mean latency over a slice of intervals."""
        return self.total_ms[number, intervals].sum() / self.calls[number, intervals].sum()

    def noise(self, since):
        """|mean latency - the statement's level| of each interval with calls from `since` on:
        what is left to a predictor that knew each level, even the next interval's (the calls'
        own variation, which nothing can predict)."""
        calls, ran = self.calls[:, since:], self.calls[:, since:] > 0
        return np.abs(self.total_ms[:, since:][ran] / calls[ran] - self.level_ms[:, since:][ran])

    def current_level_error(self, since):
        """|mean latency - the statement's level in its interval with calls before| of each
        interval with calls from `since` on that has one before: what is left to a predictor
        that knew every level up to the interval it predicts from, as the service does."""
        errors = []
        for calls, totals, levels in zip(self.calls, self.total_ms, self.level_ms):
            ran = np.flatnonzero(calls)
            target, before = ran[1:], ran[:-1]
            kept = target >= since
            errors.append(np.abs(totals[target[kept]] / calls[target[kept]]
                                 - levels[before[kept]]))
        return np.concatenate(errors)

    def reading(self, texts, moment):
        """The first snapshot's reading: a day of calls at each statement's usual latency."""
        rows = []
        for text, calls, latency in zip(texts, self.prior_calls, self.base_ms[:, 0]):
            counters = dict.fromkeys(COUNTERS, 0)
            counters.update(calls=int(calls), total_exec_time=calls * latency,
                            mean_exec_time=latency, rows=int(calls), shared_blks_hit=int(calls))
            rows.append((text, 10, None, *counters.values()))
        return Reading(taken_at=moment, stats_reset=None, rows=rows)

    def query_stats(self, database, queries, snapshots, period):
        """QueryStat rows (dicts) of every interval with calls; cumulative counters from the
        first snapshot's on, the standard deviation over every call since then."""
        prior = self.prior_calls[:, None]
        calls = prior + np.cumsum(self.calls, axis=1)
        total = prior * self.base_ms + np.cumsum(self.total_ms, axis=1)
        # Expected square of one call's latency: level² × (1 + variation²), summed over calls.
        squares = self.calls * self.level_ms ** 2 * (1 + self.variation ** 2)
        base_squares = prior * self.base_ms ** 2 * (1 + self.variation ** 2)
        mean = total / calls
        stddev = np.sqrt(np.maximum((base_squares + np.cumsum(squares, axis=1)) / calls
                                    - mean ** 2, 0))
        rows = np.round(self.rows_per_call * self.calls)
        read = np.round(self.blocks * self.read_share)
        hit = np.round(self.blocks) - read
        cumulative_rows, cumulative_hit, cumulative_read = (
            prior + np.cumsum(rows, axis=1), prior + np.cumsum(hit, axis=1),
            np.cumsum(read, axis=1),
        )
        for number, step in zip(*np.nonzero(self.calls)):
            yield {
                "query_id": queries[number], "taken_at": snapshots[step].taken_at,
                "snapshot_id": snapshots[step].pk, "database_id": database.pk, "queryid": None,
                "calls": int(calls[number, step]), "total_exec_time": total[number, step],
                "min_exec_time": mean[number, step], "max_exec_time": mean[number, step],
                "mean_exec_time": mean[number, step], "stddev_exec_time": stddev[number, step],
                "rows": int(cumulative_rows[number, step]),
                "shared_blks_hit": int(cumulative_hit[number, step]),
                "shared_blks_read": int(cumulative_read[number, step]),
                "plans": 0, "total_plan_time": 0.0,
                "interval_seconds": period.total_seconds(),
                "delta_calls": int(self.calls[number, step]),
                "delta_total_exec_time": self.total_ms[number, step],
                "delta_mean_exec_time": self.total_ms[number, step] / self.calls[number, step],
                "delta_rows": int(rows[number, step]), "delta_shared_blks_hit":
                int(hit[number, step]), "delta_shared_blks_read": int(read[number, step]),
            }


def ar1(rng, persistence, noise, shape):
    """Autoregressive noise along the last axis: x[t] = persistence × x[t-1] + N(0, noise)."""
    return lfilter([1.0], [1.0, -persistence], rng.normal(0, noise, shape), axis=-1)


def feature_rows(examples, count):
    """`count` feature dicts of examples spread over every statement, as the service
    receives them."""
    every = max(1, len(examples.features) // count)
    return [dict(zip(FEATURE_NAMES, row)) for row in examples.features[::every][:count].tolist()]


def median_ms(repeat, call):
    """The median of `repeat` timed calls, in milliseconds."""
    return statistics.median(timeit.repeat(call, number=1, repeat=repeat)) * 1000
