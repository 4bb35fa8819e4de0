"""Every answer JSON, errors included: a method a path does not take is a 405 with `Allow`,
a BadInput a 400 naming its field, nothing loaded a 503, an unknown path a 404; Django's own
400 (a bad Host) and 500 too. A database that does not answer is a 503, as in the web app."""

import sys

from django.http import JsonResponse

from mlservice.contract import BadInput
from mlservice.serving import Unavailable
from pganalytics.errors import DATABASE_DOWN, RETRY_AFTER_SECONDS
from pganalytics.request_id import current_request_id


def endpoint(**views):
    """One URL's view: `views` maps each method it takes (GET=..., POST=...) to its view."""
    allowed = ", ".join(views)

    def dispatch(request, **kwargs):
        view = views.get(request.method)
        if view is None:
            response = JsonResponse(
                {"error": f"method {request.method} not allowed: {allowed}"}, status=405
            )
            response["Allow"] = allowed
            return response
        try:
            return view(request, **kwargs)
        except BadInput as error:
            return JsonResponse(error.as_json(), status=400)
        except Unavailable as error:
            return unavailable(str(error))

    return dispatch


def unavailable(message):
    response = JsonResponse({"error": message}, status=503)
    response["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return response


def bad_request(request, exception):
    return JsonResponse({"error": "the request could not be understood"}, status=400)


def page_not_found(request, exception):
    return JsonResponse({"error": f"nothing at {request.path}"}, status=404)


def server_error(request):
    if isinstance(sys.exc_info()[1], DATABASE_DOWN):
        return unavailable("the database does not answer: try again in a few seconds")
    message = f"internal error, logged with request id {current_request_id()}"
    return JsonResponse({"error": message}, status=500)
