"""One id per request, on the response (`X-Request-ID`) and on every log line written while it
is served, so a user's error report, the server log and (later) the ML service's log meet.

A proxy's id is kept when it looks like one (bounded, plain characters: it goes into logs);
otherwise a new one is made. `current_request_id()` is what outgoing calls forward.
"""

import contextvars
import logging
import re
import uuid

from django.core.signals import request_finished

HEADER = "X-Request-ID"
_VALID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_current = contextvars.ContextVar("request_id", default=None)


def current_request_id():
    """The id of the request being served in this thread or task; None outside a request."""
    return _current.get()


class RequestIdMiddleware:
    """First in MIDDLEWARE, so errors of every later middleware are logged with the id. The id
    stays set until the response is closed: Django logs 4xx answers after the middleware."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        incoming = request.headers.get(HEADER, "")
        request_id = incoming if _VALID.fullmatch(incoming) else uuid.uuid4().hex
        _current.set(request_id)
        response = self.get_response(request)
        response[HEADER] = request_id
        return response


def forget(**kwargs):
    _current.set(None)


request_finished.connect(forget, dispatch_uid="pganalytics.request_id.forget")


class RequestIdFilter(logging.Filter):
    """Gives every record a `request_id` attribute (`-` outside a request) for the formatter."""

    def filter(self, record):
        record.request_id = _current.get() or "-"
        return True
