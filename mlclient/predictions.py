"""Cached predictions for the pages and the API: what product code calls.

    from mlclient import predictions
    predictions.current(fingerprint, features, scenario="current")
    predictions.many([(fingerprint, features, scenario), ...])  # features: a dict or a callable

Each returns, per item, one of:
  - a Prediction (`stale` False): fresh from the service or from the `predictions` cache;
  - a Prediction with `stale` True: the service cannot answer now (down, failing, breaker
    open), so the last good prediction of that fingerprint and scenario is given instead;
  - a PredictionUnavailable (`reason`): the service cannot answer and nothing was kept;
  - a PredictionError (`error`, `field`): the service refused the item (bad features).
`result.available` is True for a Prediction only; these calls never raise MLServiceError.

Keys: `prediction:{fingerprint}:{scenario}:{model_version}` in the `predictions` cache (its
TTL is PREDICTION_CACHE_TTL), so a new model moves every key at once; the model version is
asked of the service at most every VERSION_TTL seconds per process. The last good value
is kept under `prediction-last:{fingerprint}:{scenario}` for LAST_GOOD_TTL. Concurrent
misses of one key ask the service once (the cache's single-flight get_or_set); a batch
asks, in one predict_batch call, only for the keys not cached. When that one call finds the
service unavailable, the failure is kept for FAILURE_TTL under `prediction-failed:...`, so the
callers queued behind it do not each wait for a timeout of their own.
"""

import threading
from dataclasses import replace

from cachetools import TTLCache, cached
from django.core.cache import caches

from mlclient.client import MLClient
from mlclient.errors import BadRequest, MLServiceError, ServiceUnavailable
from mlclient.results import Prediction, PredictionError, PredictionUnavailable

VERSION_TTL = 5.0  # seconds between two questions for the current model version
LAST_GOOD_TTL = 24 * 3600  # seconds a last good prediction stays available as stale
FAILURE_TTL = 5  # seconds a key's failed call answers for the calls queued behind it


def prediction_key(fingerprint, scenario, model_version):
    return f"prediction:{fingerprint}:{scenario}:{model_version}"


def last_good_key(fingerprint, scenario):
    return f"prediction-last:{fingerprint}:{scenario}"


def failure_key(fingerprint, scenario):
    return f"prediction-failed:{fingerprint}:{scenario}"


@cached(TTLCache(maxsize=16, ttl=VERSION_TTL), key=lambda client: client.base_url,
        lock=threading.Lock())
def model_version(client):
    """The version the service answers with now, learnt at most every VERSION_TTL seconds
    (a failure is not remembered: the next call asks again, or meets the open breaker).

    Concurrent first calls may each ask (a lock, not cachetools' `condition`): waiting in
    line behind a stalled service's timeouts would cost each caller all the earlier ones'."""
    return client.model_info().model_version


class CachedPredictions:
    """current() and many() over `client` (None: MLClient.from_settings() at each call,
    so settings changes apply) and the cache named `cache_alias`."""

    def __init__(self, client=None, cache_alias="predictions"):
        self._client = client
        self.cache_alias = cache_alias

    @property
    def client(self):
        return self._client if self._client is not None else MLClient.from_settings()

    def current(self, fingerprint, features, scenario="current"):
        """The prediction of one fingerprint (see the module's docstring for what returns)."""
        client, cache = self.client, caches[self.cache_alias]
        try:
            key = prediction_key(fingerprint, scenario, model_version(client))
            return cache.get_or_set(
                key, lambda: self._ask(client, cache, fingerprint, features, scenario)
            )
        except BadRequest as error:
            return PredictionError(fingerprint, scenario, str(error), error.field)
        except MLServiceError as error:
            return self._last_good(cache, [(fingerprint, scenario)], error)[0]

    def many(self, items):
        """Predictions of [(fingerprint, features, scenario), ...] in order: cached ones
        from the cache, the others from one predict_batch call (each key asked once).

        `features` may be a callable returning the dict: it is called only for a key not
        cached, so a caller whose features cost a plan or a query pays for the misses only."""
        items = list(items)
        client, cache = self.client, caches[self.cache_alias]
        try:
            version = model_version(client)
        except MLServiceError as error:
            return self._last_good(cache, [(f, s) for f, _, s in items], error)
        keys = [prediction_key(fingerprint, scenario, version)
                for fingerprint, _, scenario in items]
        results = cache.get_many(keys)
        missing = {}
        for key, item in zip(keys, items):
            if key not in results:
                missing.setdefault(key, item)
        if missing:
            asked = [(fingerprint, features() if callable(features) else features, scenario)
                     for fingerprint, features, scenario in missing.values()]
            try:
                answers = client.predict_batch(asked)
            except MLServiceError as error:
                answers = self._last_good(cache, [(f, s) for f, _, s in missing.values()], error)
            else:
                self._keep([a for a in answers if isinstance(a, Prediction)], cache, missing)
            results.update(zip(missing, answers))
        return [results[key] for key in keys]

    def _ask(self, client, cache, fingerprint, features, scenario):
        """The service's prediction, kept as the last good one; a caller that waited for
        another's failed call gets that failure instead of trying again."""
        failed = cache.get(failure_key(fingerprint, scenario))
        if failed is not None:
            raise ServiceUnavailable(failed)
        try:
            prediction = client.predict(fingerprint, features, scenario)
        except ServiceUnavailable as error:
            cache.set(failure_key(fingerprint, scenario), str(error), FAILURE_TTL)
            raise
        cache.set(last_good_key(fingerprint, scenario), prediction, LAST_GOOD_TTL)
        return prediction

    def _keep(self, fresh, cache, missing):
        """Store a batch's fresh predictions under their keys and as the last good ones."""
        by_item = {(p.fingerprint, p.scenario): p for p in fresh}
        cache.set_many({key: by_item[f, s] for key, (f, _, s) in missing.items()
                        if (f, s) in by_item})
        cache.set_many({last_good_key(f, s): p for (f, s), p in by_item.items()}, LAST_GOOD_TTL)

    def _last_good(self, cache, pairs, error):
        """For each (fingerprint, scenario): its last good prediction marked stale, or
        PredictionUnavailable saying why the service could not answer."""
        kept = cache.get_many([last_good_key(f, s) for f, s in pairs])
        return [
            replace(kept[last_good_key(f, s)], stale=True) if last_good_key(f, s) in kept
            else PredictionUnavailable(f, s, str(error))
            for f, s in pairs
        ]


_shared = CachedPredictions()
current = _shared.current
many = _shared.many
