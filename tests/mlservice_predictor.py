"""A Predictor-compatible object for the tests, picklable and importable by the service's own
processes when they load it (so this module imports nothing of the test suite)."""

from pganalytics.analytics.features import FEATURE_NAMES


class ScalingPredictor:
    """Predicts `factor` × each row's mean latency, within ±10 % of that."""

    source = "model"
    feature_names = FEATURE_NAMES

    def __init__(self, factor, metrics):
        self.factor = factor
        self.metrics = metrics

    def predict(self, rows):
        return [
            (self.factor * row["mean_ms"], 0.9 * self.factor * row["mean_ms"],
             1.1 * self.factor * row["mean_ms"])
            for row in rows
        ]
