"""The circuit breaker: closed, open after N consecutive failures, half-open after the
reset timeout, where one trial call decides between closed and open again.

Only the state is under the lock, never the call (pybreaker holds its lock around the
call, which runs concurrent calls one at a time). Time is the monotonic clock, so a
change of the wall clock opens or closes nothing. While open, `admit()` raises CircuitOpen
after one lock acquisition: a few microseconds.
"""

import threading
import time
from contextlib import contextmanager

from mlclient.errors import CircuitOpen

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"
STATE_NUMBERS = {CLOSED: 0, HALF_OPEN: 1, OPEN: 2}  # the Prometheus gauge's values


class CircuitBreaker:
    """`with breaker.calling(is_failure):` around each call. A failure is an exception
    for which `is_failure(error)` is true; any other outcome, a 4xx answer included, is a
    success (the service answered). `on_change(state)` is called on every transition,
    under the lock (keep it cheap)."""

    def __init__(self, failure_threshold=5, reset_timeout=30.0, clock=time.monotonic,
                 on_change=None):
        self.failure_threshold = failure_threshold
        self.reset_timeout = reset_timeout
        self._clock = clock
        self._on_change = on_change
        self._lock = threading.Lock()
        self._state = CLOSED
        self._failures = 0  # consecutive, reset by a success
        self._opened_at = 0.0
        self._trial_in_flight = False

    @property
    def state(self):
        """closed, open or half_open (open whose reset timeout has passed reads half_open)."""
        with self._lock:
            if self._state == OPEN and self._clock() - self._opened_at >= self.reset_timeout:
                return HALF_OPEN
            return self._state

    @property
    def consecutive_failures(self):
        with self._lock:
            return self._failures

    def admit(self):
        """Let a call through or raise CircuitOpen. Returns True for the half-open trial."""
        with self._lock:
            if self._state == CLOSED:
                return False
            if self._state == OPEN:
                waited = self._clock() - self._opened_at
                if waited < self.reset_timeout:
                    raise CircuitOpen(
                        f"circuit open after {self._failures} consecutive failures: "
                        f"next try in {self.reset_timeout - waited:.1f} s"
                    )
                self._move(HALF_OPEN)
            if self._trial_in_flight:
                raise CircuitOpen("circuit half-open: its trial call is in flight")
            self._trial_in_flight = True
            return True

    def succeeded(self, trial):
        """The trial's success closes the breaker; a late success of a call let through
        before it opened changes nothing but the count while closed."""
        with self._lock:
            if trial:
                self._trial_in_flight = False
                self._failures = 0
                self._move(CLOSED)
            elif self._state == CLOSED:
                self._failures = 0

    def failed(self, trial):
        """The trial's failure opens the breaker again for a whole reset timeout."""
        with self._lock:
            if trial:
                self._trial_in_flight = False
                self._open()
            elif self._state == CLOSED:
                self._failures += 1
                if self._failures >= self.failure_threshold:
                    self._open()

    def abandoned(self, trial):
        """The call ended without a verdict (interrupted): let the next caller try."""
        if trial:
            with self._lock:
                self._trial_in_flight = False

    @contextmanager
    def calling(self, is_failure):
        trial = self.admit()
        try:
            yield
        except Exception as error:
            if is_failure(error):
                self.failed(trial)
            else:
                self.succeeded(trial)
            raise
        except BaseException:
            self.abandoned(trial)
            raise
        self.succeeded(trial)

    def _open(self):
        self._opened_at = self._clock()
        self._move(OPEN)

    def _move(self, state):
        self._state = state
        if self._on_change is not None:
            self._on_change(state)
