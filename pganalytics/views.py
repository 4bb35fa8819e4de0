"""The HTML pages: the same answers as the API, rendered; readable without JavaScript."""

from django.shortcuts import render

from pganalytics.analytics import services
from pganalytics.access import analytics_page
from pganalytics.charts import line_chart


@analytics_page
def databases(request):
    rows = [services.database_summary(each, request.user) for each in services.databases()]
    return render(request, "pganalytics/databases.html", {"databases": rows})


@analytics_page
def overview(request, database_id):
    """The page a DBA opens first: where a database's time goes, and what needs a look."""
    database = services.database_or_404(database_id)
    try:
        params = services.overview_params(request.GET)
    except services.BadRequest as error:
        return render(request, "pganalytics/bad_request.html", {"error": error}, status=400)
    context = {
        "database": database,
        "overview": services.database_overview(database, params["window"]),
        "window": request.GET.get("window", services.DEFAULT_WINDOW_TEXT),
        "windows": services.WINDOW_CHOICES,
        "overdue_periods": services.OVERDUE_PERIODS,
    }
    return render(request, "pganalytics/overview.html", context)


@analytics_page
def top_queries(request, database_id):
    database = services.database_or_404(database_id)
    try:
        params = services.top_query_params(request.GET)
    except services.BadRequest as error:
        return render(request, "pganalytics/bad_request.html", {"error": error}, status=400)
    context = {
        "database": database,
        "window": request.GET.get("window", services.DEFAULT_WINDOW_TEXT),
        "windows": services.WINDOW_CHOICES,
        "order": params["order"],
        "orders": list(services.ORDERINGS),
        "workload": services.workload(database, **params),
        "window_start": services.window_start(params["window"]),
    }
    suggestions = services.database_suggestions(database)
    services.mark_rows(database, context["workload"].queries, suggestions)
    services.predict_rows(database, context["workload"].queries)
    context["evictions"] = services.evictions(database, context["window_start"])
    return render(request, "pganalytics/top_queries.html", context)


@analytics_page
def query_detail(request, database_id, fingerprint):
    database = services.database_or_404(database_id)
    try:
        params = services.query_detail_params(request.GET)
    except services.BadRequest as error:
        return render(request, "pganalytics/bad_request.html", {"error": error}, status=400)
    detail = services.query_detail(database, fingerprint, **params)
    points = [(point["taken_at"], point["mean_ms"]) for point in detail["history"]]
    context = {
        "database": database,
        "detail": detail,
        "chart": line_chart(points),
        "window": request.GET.get("window", ""),
        "windows": services.HISTORY_WINDOWS,
    }
    return render(request, "pganalytics/query_detail.html", context)


@analytics_page
def anomalies(request):
    context = {"anomalies": services.current_anomalies()}
    return render(request, "pganalytics/anomalies.html", context)
