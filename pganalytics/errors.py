"""Error answers: `{"error": ...}` JSON under /api/, the app's own page elsewhere.

urls.py makes these Django's handler400/403/404/500, which Django calls for errors raised
anywhere, middleware included (with DEBUG on, it shows its debug pages instead). handler500
runs inside Django's `except` block, so it tells a database that does not answer (the pool's
checkout timeout, a refused or timed-out connect) from a bug: 503 with Retry-After, not 500.
"""

import logging
import sys

import psycopg
from django.db import InterfaceError, OperationalError
from django.http import HttpResponse, JsonResponse
from django.template import loader
from django.urls import Resolver404

from pganalytics.fingerprint import fold_whitespace
from pganalytics.request_id import current_request_id

API_PREFIX = "/api/"
TEMPLATE = "pganalytics/error.html"
RETRY_AFTER_SECONDS = 5
# Django wraps psycopg's errors in its own; psycopg_pool.PoolTimeout is a psycopg one.
DATABASE_DOWN = (OperationalError, InterfaceError, psycopg.OperationalError)


def error_response(request, status, title, message, *, with_request=True):
    """JSON under /api/, else the error page. 500 and 503 render it without the request:
    the context processors would load the user, from the database that may be what failed."""
    if request.path.startswith(API_PREFIX):
        return JsonResponse({"error": message}, status=status)
    context = {"title": title, "message": message}
    content = loader.render_to_string(TEMPLATE, context, request if with_request else None)
    return HttpResponse(content, status=status)


def bad_request(request, exception):
    return error_response(request, 400, "Bad request", "the request could not be understood")


def permission_denied(request, exception):
    message = str(exception) or "your account may not do this"
    return error_response(request, 403, "Not allowed", message)


def csrf_failure(request, reason=""):
    """CSRF_FAILURE_VIEW: a form sent from an expired page, or without cookies."""
    message = "the form's security token is missing or expired: reload the page and send again"
    return error_response(request, 403, "Form expired", message)


def page_not_found(request, exception):
    """Our own Http404 messages ("database 7 not found"); a path that matches no URL says so
    (Resolver404's argument lists the URL patterns tried)."""
    ours = not isinstance(exception, Resolver404) and exception.args
    message = str(exception.args[0]) if ours else f"no page at {request.path}"
    return error_response(request, 404, "Not found", message)


def server_error(request):
    if isinstance(sys.exc_info()[1], DATABASE_DOWN):
        message = "the database does not answer: try again in a few seconds"
        response = error_response(request, 503, "Unavailable", message, with_request=False)
        response["Retry-After"] = str(RETRY_AFTER_SECONDS)
        return response
    message = f"internal error, logged with request id {current_request_id()}"
    return error_response(request, 500, "Server error", message, with_request=False)


class DatabaseDownFilter(logging.Filter):
    """On `django.request`: such a 503 is logged as one line with the reason, not with a
    traceback per request for as long as the database is down."""

    def filter(self, record):
        error = record.exc_info[1] if record.exc_info else None
        if getattr(record, "status_code", None) == 503 and isinstance(error, DATABASE_DOWN):
            record.msg += " (%s)"
            record.args = (*record.args, fold_whitespace(str(error)))
            record.exc_info = None
        return True
