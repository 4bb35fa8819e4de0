"""The JSON API under /api/v1/: the same answers as the pages, cached whole per user."""

from dataclasses import asdict
from functools import wraps

from django.http import Http404, JsonResponse
from django.utils.cache import patch_cache_control
from django.views.decorators.csrf import csrf_exempt

from pganalytics.analytics import latency_predictions, services
from pganalytics.access import VIEW_ANALYTICS
from pganalytics.response_cache import cached_response

SAFE_METHODS = ("GET", "HEAD")


def api_view(view):
    """GET and HEAD only (405), login required (401, not a redirect), the analytics permission
    (403); every answer JSON, errors `{"error": ...}` (400, 404 here; the rest in errors.py).
    No CSRF check: nothing here changes state, so a POST gets its 405, not a CSRF page."""

    @csrf_exempt
    @wraps(view)
    def wrapper(request, *args, **kwargs):
        if request.method not in SAFE_METHODS:
            response = JsonResponse({"error": f"method {request.method} not allowed"}, status=405)
            response["Allow"] = ", ".join(SAFE_METHODS)
            return response
        if not request.user.is_authenticated:
            return JsonResponse({"error": "authentication required"}, status=401)
        if not request.user.has_perm(VIEW_ANALYTICS):
            return JsonResponse({"error": f"permission required: {VIEW_ANALYTICS}"}, status=403)
        try:
            return view(request, *args, **kwargs)
        except services.BadRequest as error:
            return JsonResponse({"error": str(error)}, status=400)
        except Http404 as error:
            return JsonResponse({"error": str(error) or "not found"}, status=404)

    return wrapper


def every_database(request, **kwargs):
    return services.data_version()


def one_database(request, database_id, **kwargs):
    return services.data_version(database_id)


@api_view
@cached_response(every_database)
def databases(request):
    response = JsonResponse(
        {"databases": [services.database_summary(d, request.user) for d in services.databases()]}
    )
    patch_cache_control(response, no_store=True)  # the lag moves with the clock
    return response


@api_view
def overview(request, database_id):
    """Not kept whole: the collection's lag moves with the clock; its figures are cached
    (services.database_overview)."""
    database = services.database_or_404(database_id)
    params = services.overview_params(request.GET)
    response = JsonResponse(services.database_overview(database, params["window"]))
    patch_cache_control(response, private=True, no_store=True)
    return response


def top_query_params(request):
    return services.top_query_params(request.GET)


@api_view
@cached_response(one_database, params_of=top_query_params)
def top_queries(request, database_id, window, order):
    database = services.database_or_404(database_id)
    found = services.workload(database, window=window, order=order)
    services.mark_rows(database, found.queries, services.database_suggestions(database))
    services.predict_rows(database, found.queries)
    start = services.window_start(window)
    response = JsonResponse(
        {
            "database": database.name,
            "window_seconds": window.total_seconds(),
            "window_start": start,
            "order": order,
            "statements": found.statements,
            "calls": found.calls,
            "total_ms": found.total_ms,
            "queries": [asdict(row) for row in found.queries],
            "evictions": services.evictions(database, start),
        }
    )
    if latency_predictions.may_pass(row.prediction for row in found.queries):
        patch_cache_control(response, no_store=True)
    return response


def query_detail_params(request):
    return services.query_detail_params(request.GET)


@api_view
@cached_response(one_database, params_of=query_detail_params)
def query_detail(request, database_id, fingerprint, window):
    database = services.database_or_404(database_id)
    detail = services.query_detail(database, fingerprint, window)
    response = JsonResponse(detail)
    may_pass = (
        detail["plan"].get("transient")
        or detail["suggestions"]["transient"]
        or latency_predictions.may_pass(detail["prediction"].values())
    )
    if may_pass:
        patch_cache_control(response, no_store=True)
    return response


@api_view
@cached_response(every_database)
def anomalies(request):
    return JsonResponse({"anomalies": services.current_anomalies()})
