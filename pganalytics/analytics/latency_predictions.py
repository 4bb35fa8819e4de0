"""Latency predictions as the pages and the API show them.

They come from the `predictions` cache or the ML service through a client a page can afford
to wait for (page_client: one try, a short read timeout, its own circuit breaker), and never
raise: while the service is down a prediction is the last good one marked stale, or
"unavailable" with the reason.
"""

from django.conf import settings

from mlclient import MLClient, Prediction, PredictionError
from mlclient.predictions import CachedPredictions

MAY_PASS = ("stale", "unavailable")  # statuses an answer must not be kept with


def page_client():
    """The process' client for pages and API answers: no retries and ML_PAGE_TIMEOUT to
    read, so a page waits at most about one timeout for a service that stalls, and none
    once this client's breaker is open (the shared client retries: ~20 s on a stall)."""
    return MLClient.from_settings(read_timeout=settings.ML_PAGE_TIMEOUT, max_retries=0)


def client_stats():
    """The admin cache dashboard's "ML client" panel: the page client's stats()."""
    return page_client().stats()


def predict(items):
    """shown() of each prediction of [(fingerprint, features, scenario), ...], in order, from
    one mlclient.predictions.many() call (features may be callables: computed for the
    items not cached only)."""
    items = list(items)
    if not items:  # not even the model version is asked for
        return []
    return [shown(result) for result in CachedPredictions(client=page_client()).many(items)]


def shown(result):
    """JSON-ready: `status` "ok" or "stale" with the predicted latency (ms) of the next
    interval, its 80 % interval, model version and source; "unavailable" or "refused"
    (the service rejected the features) with the `reason`."""
    if isinstance(result, Prediction):
        low, high = result.interval_ms
        return {
            "status": "stale" if result.stale else "ok",
            "predicted_ms": result.predicted_ms,
            "interval_ms": [low, high],
            "confidence": result.confidence,
            "model_version": result.model_version,
            "source": result.source,
        }
    if isinstance(result, PredictionError):
        return {"status": "refused", "reason": result.error}
    return {"status": "unavailable", "reason": result.reason}


def may_pass(predictions):
    """Whether one of these shown() predictions is stale or unavailable: an answer holding
    it is not to be kept as if fresh."""
    return any(prediction is not None and prediction["status"] in MAY_PASS
               for prediction in predictions)
