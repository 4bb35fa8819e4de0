"""mlclient's Prometheus metrics, correct with one process or many.

Plain Counters, a Gauge and a Histogram, which prometheus_client's multiprocess mode
(PROMETHEUS_MULTIPROC_DIR set before Python starts) writes per process and sums at a scrape.
The breaker gauge shows the worst state among the live processes (each has its breaker).
"""

from prometheus_client import Counter, Gauge, Histogram

CALLS = Counter(
    "mlclient_calls", "Calls to the ML service by outcome (ok, bad_request, unavailable, "
    "circuit_open)", ["outcome"],
)
RETRIES = Counter("mlclient_retries", "Retries of calls to the ML service")
BREAKER_STATE = Gauge(
    "mlclient_breaker_state", "Circuit breaker: 0 closed, 1 half-open, 2 open (worst live "
    "process)", multiprocess_mode="livemax",
)
LATENCY = Histogram(
    "mlclient_call_seconds", "Duration of calls to the ML service, retries included",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
OUTCOMES = ("ok", "bad_request", "unavailable", "circuit_open")
CALLS_BY_OUTCOME = {outcome: CALLS.labels(outcome) for outcome in OUTCOMES}
