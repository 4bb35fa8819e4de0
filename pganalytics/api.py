"""The JSON API under /api/v1/: the same answers as the pages, cached whole per user."""

from dataclasses import asdict
from functools import wraps

from django.http import Http404, JsonResponse
from django.shortcuts import get_object_or_404
from django.utils.cache import patch_cache_control
from django.views.decorators.http import require_GET

from pganalytics import services
from pganalytics.models import MonitoredDatabase
from pganalytics.response_cache import cached_response


def api_view(view):
    """GET only, login required (401 JSON, not a redirect), errors as JSON (400, 404)."""

    @require_GET
    @wraps(view)
    def wrapper(request, *args, **kwargs):
        if not request.user.is_authenticated:
            return JsonResponse({"error": "authentication required"}, status=401)
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
    return JsonResponse({"databases": [services.database_summary(d) for d in services.databases()]})


@api_view
@cached_response(one_database)
def top_queries(request, database_id):
    database = get_object_or_404(MonitoredDatabase, pk=database_id)
    window, order = services.top_query_params(request.GET)
    rows = services.top_queries(database, window=window, order=order)
    return JsonResponse(
        {
            "database": database.name,
            "window_seconds": window.total_seconds(),
            "order": order,
            "queries": [asdict(row) for row in rows],
        }
    )


@api_view
@cached_response(one_database)
def query_detail(request, database_id, fingerprint):
    database = get_object_or_404(MonitoredDatabase, pk=database_id)
    detail = services.query_detail(database, fingerprint)
    response = JsonResponse(detail)
    if detail["plan"]["status"] == "failed":  # perhaps transient: not kept for the version
        patch_cache_control(response, no_store=True)
    return response


@api_view
@cached_response(every_database)
def anomalies(request):
    return JsonResponse({"anomalies": services.current_anomalies()})
