"""The HTML pages: the same answers as the API, rendered; readable without JavaScript."""

from django.contrib.auth.decorators import login_required
from django.shortcuts import get_object_or_404, render

from pganalytics import services
from pganalytics.charts import line_chart
from pganalytics.models import MonitoredDatabase


@login_required
def databases(request):
    rows = [services.database_summary(database) for database in services.databases()]
    return render(request, "pganalytics/databases.html", {"databases": rows})


@login_required
def top_queries(request, database_id):
    database = get_object_or_404(MonitoredDatabase, pk=database_id)
    try:
        window, order = services.top_query_params(request.GET)
    except services.BadRequest as error:
        return render(request, "pganalytics/bad_request.html", {"error": error}, status=400)
    context = {
        "database": database,
        "window": request.GET.get("window", services.DEFAULT_WINDOW_TEXT),
        "windows": services.WINDOW_CHOICES,
        "order": order,
        "orders": list(services.ORDERINGS),
        "queries": services.top_queries(database, window=window, order=order),
    }
    return render(request, "pganalytics/top_queries.html", context)


@login_required
def query_detail(request, database_id, fingerprint):
    database = get_object_or_404(MonitoredDatabase, pk=database_id)
    detail = services.query_detail(database, fingerprint)
    points = [(point["taken_at"], point["mean_ms"]) for point in detail["history"]]
    context = {"database": database, "detail": detail, "chart": line_chart(points)}
    return render(request, "pganalytics/query_detail.html", context)


@login_required
def anomalies(request):
    return render(request, "pganalytics/anomalies.html", {"anomalies": services.current_anomalies()})
