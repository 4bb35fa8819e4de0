from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from caching.prometheus import metrics_view
from pganalytics import api, views
from pganalytics.health import healthz
from pganalytics.metrics_access import metrics_access

pages = (
    [
        path("", views.databases, name="databases"),
        path("databases/<int:database_id>/", views.overview, name="overview"),
        path("databases/<int:database_id>/queries/", views.top_queries, name="top_queries"),
        path(
            "databases/<int:database_id>/queries/<str:fingerprint>/",
            views.query_detail,
            name="query_detail",
        ),
        path("anomalies/", views.anomalies, name="anomalies"),
        path(
            "login/",
            auth_views.LoginView.as_view(template_name="pganalytics/login.html"),
            name="login",
        ),
        path("logout/", auth_views.LogoutView.as_view(), name="logout"),  # POST only
    ],
    "pganalytics",
)
api_v1 = (
    [
        path("databases/", api.databases, name="databases"),
        path("databases/<int:database_id>/", api.overview, name="overview"),
        path("databases/<int:database_id>/queries/", api.top_queries, name="top_queries"),
        path(
            "databases/<int:database_id>/queries/<str:fingerprint>/",
            api.query_detail,
            name="query_detail",
        ),
        path("anomalies/", api.anomalies, name="anomalies"),
    ],
    "api",
)

handler400 = "pganalytics.errors.bad_request"
handler403 = "pganalytics.errors.permission_denied"
handler404 = "pganalytics.errors.page_not_found"
handler500 = "pganalytics.errors.server_error"

urlpatterns = [
    path("healthz", healthz, name="healthz"),
    path("metrics", metrics_access(metrics_view), name="metrics"),
    path("admin/", admin.site.urls),
    path("api/v1/", include(api_v1)),
    path("", include(pages)),
]
