"""The errors of mlclient: every one an MLServiceError, so a caller can catch them all."""


class MLServiceError(Exception):
    """The ML service gave no usable answer."""


class ServiceUnavailable(MLServiceError):
    """No answer after the retries: connection refused or reset, a timeout, a 5xx or a 429.

    Counts as a failure for the circuit breaker."""


class BadRequest(MLServiceError):
    """The service refused the request (a 4xx other than 429): retrying cannot help, and the
    service answered, so it is not a breaker failure. `status` and `field` come from the
    answer (`field` None when the service named none)."""

    def __init__(self, message, *, status, field=None):
        super().__init__(message)
        self.status = status
        self.field = field


class CircuitOpen(MLServiceError):
    """The breaker is open (or half-open with its trial call in flight): not even tried."""
