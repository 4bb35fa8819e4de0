"""One log line per request, `method path status duration`, with its X-Request-ID (the
project's LOGGING adds it; pganalytics.request_id's middleware, before this one, sets it)."""

import logging
import time

log = logging.getLogger(__name__)


class AccessLogMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        started = time.perf_counter()
        response = self.get_response(request)
        elapsed_ms = (time.perf_counter() - started) * 1000
        log.info("%s %s %s %.1f ms", request.method, request.path, response.status_code, elapsed_ms)
        return response
