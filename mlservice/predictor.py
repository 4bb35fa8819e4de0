"""What the service answers with: a trained model, or the last value before one exists.

Both take rows of features (`{name: float}` with every name of their `feature_names`, as
features.extract_features gives them) and answer `(predicted_ms, low_ms, high_ms)` per row: the
mean latency of the statement's next interval with calls, and an 80 % interval around it. The
rows go through one numpy matrix, the model's trees walked for all of them at once.
"""

import numpy as np

from pganalytics.analytics.features import FEATURE_NAMES

Z_80 = 1.2816  # mean ± Z_80 standard deviations holds 80 % of a normal distribution
FLOOR_MS = 1e-3  # latencies are modelled as logs: one below a microsecond reads as one


def feature_matrix(rows, names):
    """The rows as one float matrix, a column per name in `names` order."""
    return np.array([[row[name] for name in names] for row in rows], dtype=float).reshape(
        len(rows), len(names)
    )


def log_ms(milliseconds):
    return np.log(np.maximum(milliseconds, FLOOR_MS))


class Predicting:
    """predict() of a predictor that answers a whole matrix at once (predict_matrix)."""

    feature_names = FEATURE_NAMES

    def predict(self, rows):
        """[(predicted_ms, low_ms, high_ms)] of each row, in order; ValueError for a value
        that is not a finite number."""
        if not rows:
            return []
        matrix = feature_matrix(rows, self.feature_names)
        if not np.isfinite(matrix).all():
            raise ValueError("every feature must be a finite number")
        point, low, high = self.predict_matrix(matrix)
        return list(zip(point.tolist(), low.tolist(), high.tolist()))

    def column(self, matrix, name):
        return matrix[:, self.feature_names.index(name)]


class BaselinePredictor(Predicting):
    """No training: the next interval will be like this one. Its mean latency, and the
    interval mean ± Z_80 standard deviations (the server's, of single calls) clipped at 0."""

    source = "baseline"

    def __init__(self):
        self.metrics = {}

    def predict_matrix(self, matrix):
        mean = self.column(matrix, "mean_ms")
        spread = Z_80 * self.column(matrix, "stddev_ms")
        return mean, np.maximum(mean - spread, 0.0), mean + spread


class Predictor(Predicting):
    """A model trained by mlservice.training: gradient-boosted trees of the log of the next
    interval's latency over the row's `reference` feature (the recent history's mean, for the
    versions trained now) — its median, and its 10 % and 90 % quantiles, the last two moved
    apart (or together) by `widening` so that they held 80 % of the validation examples;
    all moved by `plan_elasticity` × log(plan_cost_change): latency ∝ plan cost ^ elasticity,
    one figure for every statement (mlservice.training.plan_elasticity).

    The ratio, not the latency itself: a tree's prediction is a step function of its inputs,
    and the latency's own steps would be far coarser than the intervals' noise. A row whose
    reference and mean_ms are 0 (no calls) has nothing to go from and is predicted near 0.
    """

    source = "model"
    reference = "mean_ms"  # versions pickled before `reference` was kept went from the last mean
    plan_elasticity = 0.0  # and those before it, without one

    def __init__(self, forest, widening, metrics, feature_names=FEATURE_NAMES,
                 reference="mean_ms", plan_elasticity=0.0):
        self.forest = forest
        self.widening = widening
        self.metrics = metrics
        self.feature_names = tuple(feature_names)
        self.reference = reference
        self.plan_elasticity = plan_elasticity

    def predict_matrix(self, matrix):
        reference = self.column(matrix, self.reference)
        # A vector sent without its history (has_history 0) goes from its own interval's mean.
        current = log_ms(np.where(reference > 0, reference, self.column(matrix, "mean_ms")))
        if self.plan_elasticity and "plan_cost_change" in self.feature_names:
            current = current + self.plan_elasticity * plan_change(self, matrix)
        point, low, high = self.forest.predict(matrix)
        point = np.exp(current + point)
        low = np.minimum(np.exp(current + low - self.widening), point)
        return point, low, np.maximum(np.exp(current + high + self.widening), point)


def plan_change(predictor, matrix):
    """log(plan_cost_change) of each row: 0 where the plan did not change or is not known."""
    return np.log(np.maximum(predictor.column(matrix, "plan_cost_change"), 1e-9))


class Forest:
    """Fitted HistGradientBoostingRegressors as flat arrays of nodes, every tree walked for
    every row at once: one numpy operation a level.

    scikit-learn walks its trees one at a time with ~10 µs of overhead each: 3-5 ms for one
    row through the ~400 trees of a Predictor (measured here), where this takes ~0.1 ms; a
    batch of 500 costs about the same either way. Pickled, it is numpy arrays only. It reads
    scikit-learn's private fields (scikit-learn is pinned), so it checks on `sample` rows that
    it answers as scikit-learn does.
    """

    def __init__(self, models, sample):
        trees = [tree.nodes for model in models for (tree,) in model._predictors]
        sizes = [len(nodes) for nodes in trees]
        self.roots = np.cumsum([0, *sizes[:-1]])
        nodes = np.concatenate(trees)
        offsets = np.repeat(self.roots, sizes)
        leaf = nodes["is_leaf"].astype(bool)
        itself = np.arange(len(nodes))  # a leaf leads to itself: every walk is `depth` steps
        self.feature = np.where(leaf, 0, nodes["feature_idx"]).astype(np.intp)
        self.threshold = np.where(leaf, np.inf, nodes["num_threshold"])
        # Node i's children at 2i (its value at most the threshold) and 2i + 1 (above it).
        self.children = np.stack([np.where(leaf, itself, nodes[side] + offsets)
                                  for side in ("left", "right")], axis=1).ravel()
        self.value = np.where(leaf, nodes["value"], 0.0)
        self.depth = int(nodes["depth"].max())
        self.first_trees = np.cumsum([0, *(len(model._predictors) for model in models[:-1])])
        self.baselines = np.array([model._baseline_prediction.item() for model in models])
        if not np.allclose(self.predict(sample), [model.predict(sample) for model in models]):
            raise RuntimeError("the trees read from scikit-learn do not answer as it does")

    def predict(self, matrix):
        """Each model's predictions (a row per model, a column per row of `matrix`). Finite
        values only: scikit-learn sends a missing one down a side of its own."""
        rows, columns = matrix.shape
        flat = matrix.ravel()
        starts = np.arange(rows)[:, None] * columns  # where each row begins in `flat`
        nodes = np.broadcast_to(self.roots, (rows, len(self.roots)))
        for _ in range(self.depth):
            above = flat.take(starts + self.feature.take(nodes)) > self.threshold.take(nodes)
            nodes = self.children.take(2 * nodes + above)
        sums = np.add.reduceat(self.value.take(nodes), self.first_trees, axis=1)
        return (sums + self.baselines).T
