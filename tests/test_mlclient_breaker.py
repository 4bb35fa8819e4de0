"""The circuit breaker on its own, on a clock the test moves: transitions, the one trial
call, what counts as a failure, and calls that run concurrently (only the state is locked)."""

import threading

import pytest

from mlclient.breaker import CircuitBreaker
from mlclient.errors import BadRequest, CircuitOpen, ServiceUnavailable


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def is_failure(error):
    return isinstance(error, ServiceUnavailable)


def fail(breaker, error=None):
    with pytest.raises(type(error or ServiceUnavailable("down"))):
        with breaker.calling(is_failure):
            raise error or ServiceUnavailable("down")


def succeed(breaker):
    with breaker.calling(is_failure):
        pass


def test_opens_after_the_threshold_and_half_opens_after_the_reset_timeout():
    clock, changes = Clock(), []
    breaker = CircuitBreaker(3, 30.0, clock=clock, on_change=changes.append)
    for _ in range(3):
        fail(breaker)
    assert breaker.state == "open"
    with pytest.raises(CircuitOpen, match="next try in 30.0 s"):
        succeed(breaker)

    clock.now += 29.9
    assert breaker.state == "open"
    clock.now += 0.1
    assert breaker.state == "half_open"
    succeed(breaker)

    assert breaker.state == "closed" and breaker.consecutive_failures == 0
    assert changes == ["open", "half_open", "closed"]


def test_only_the_monotonic_clock_moves_it():
    """Its clock is time.monotonic by default: the wall clock (time.time) is never read."""
    assert CircuitBreaker()._clock.__name__ == "monotonic"


def test_a_failed_trial_waits_a_whole_reset_timeout_again():
    clock = Clock()
    breaker = CircuitBreaker(1, 10.0, clock=clock)
    fail(breaker)
    clock.now += 10.0
    fail(breaker)  # the trial

    clock.now += 9.0
    assert breaker.state == "open"
    clock.now += 1.0
    assert breaker.state == "half_open"


def test_while_the_trial_runs_others_fail_fast_and_an_interrupted_trial_frees_the_slot():
    clock = Clock()
    breaker = CircuitBreaker(1, 10.0, clock=clock)
    fail(breaker)
    clock.now += 10.0

    with pytest.raises(KeyboardInterrupt):
        with breaker.calling(is_failure):
            with pytest.raises(CircuitOpen, match="trial call is in flight"):
                succeed(breaker)
            raise KeyboardInterrupt
    assert breaker.state == "half_open"
    succeed(breaker)  # the next caller is the trial
    assert breaker.state == "closed"


def test_a_refused_request_is_not_a_failure():
    breaker = CircuitBreaker(2, 10.0, clock=Clock())
    for _ in range(5):
        fail(breaker, BadRequest("bad", status=400))
    fail(breaker)

    assert breaker.state == "closed" and breaker.consecutive_failures == 1


def test_a_late_success_of_a_call_let_through_before_opening_does_not_close_it():
    breaker = CircuitBreaker(1, 10.0, clock=Clock())
    admitted = breaker.admit()  # a call in flight while the breaker closes...
    fail(breaker)  # ...another one fails and opens it
    breaker.succeeded(admitted)

    assert breaker.state == "open"


def test_calls_run_concurrently_through_it():
    breaker = CircuitBreaker(5, 10.0)
    inside = threading.Barrier(4, timeout=10)
    failures = []

    def call():
        try:
            with breaker.calling(is_failure):
                inside.wait()  # all four are in their call at once, or this breaks
        except threading.BrokenBarrierError as error:
            failures.append(error)

    threads = [threading.Thread(target=call) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(15)

    assert failures == [] and breaker.state == "closed"
