"""The cache dashboard in the admin: live figures per named cache, and clear actions.

Staff see it; clearing needs the `caching.clear_cache` permission (403 otherwise), goes
through a confirmation page and a CSRF-protected POST, and is written to the admin log.
"""

from django.contrib import admin, messages
from django.contrib.admin.models import CHANGE, LogEntry
from django.contrib.contenttypes.models import ContentType
from django.core.exceptions import PermissionDenied
from django.http import Http404, JsonResponse
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import path
from django.views.decorators.http import require_http_methods

from caching import dashboard, registry
from caching.models import CacheDashboard

CLEAR_PERMISSION = "caching.clear_cache"
POLL_SECONDS = 2
confirm_or_post = require_http_methods(["GET", "HEAD", "POST"])


@admin.register(CacheDashboard)
class CacheDashboardAdmin(admin.ModelAdmin):
    def has_module_permission(self, request):
        return request.user.is_active and request.user.is_staff

    def has_view_permission(self, request, obj=None):
        return self.has_module_permission(request)

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def get_urls(self):
        wrap = self.admin_site.admin_view
        return [
            path("", wrap(self.dashboard_view), name="caching_cachedashboard_changelist"),
            path("metrics.json", wrap(self.metrics_view), name="caching_dashboard_metrics"),
            path(
                "clear-all/", wrap(confirm_or_post(self.clear_all_view)),
                name="caching_dashboard_clear_all",
            ),
            path(
                "clear/<str:name>/", wrap(confirm_or_post(self.clear_view)),
                name="caching_dashboard_clear",
            ),
        ]

    def render(self, request, template, **context):
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "can_clear": request.user.has_perm(CLEAR_PERMISSION),
            **context,
        }
        return TemplateResponse(request, f"admin/caching/{template}", context)

    def dashboard_view(self, request):
        return self.render(
            request, "dashboard.html", title="Cache dashboard", snapshot=dashboard.snapshot(),
            poll_seconds=POLL_SECONDS,
        )

    def metrics_view(self, request):
        return JsonResponse(dashboard.snapshot())

    def clear_view(self, request, name):
        self.check_clear_permission(request)  # first: names are not to be probed without it
        if name not in registry.names():
            raise Http404(f"no cache named {name!r}")
        return self.confirm_and_clear(request, [name])

    def clear_all_view(self, request):
        self.check_clear_permission(request)
        return self.confirm_and_clear(request, registry.names())

    def check_clear_permission(self, request):
        if not request.user.has_perm(CLEAR_PERMISSION):
            raise PermissionDenied

    def confirm_and_clear(self, request, names):
        """GET: the confirmation page; POST: clear, log each cache, back to the dashboard."""
        if request.method != "POST":
            rows = [dashboard.row(registry.describe(name)) for name in names]
            title = f"Clear the {names[0]} cache?" if len(names) == 1 else "Clear all caches?"
            return self.render(request, "confirm_clear.html", title=title, rows=rows)
        cleared = {name: registry.clear(name) for name in names}
        content_type = ContentType.objects.get_for_model(CacheDashboard)
        LogEntry.objects.bulk_create(
            LogEntry(
                user=request.user, content_type=content_type, object_id=name,
                object_repr=f"{name} cache", action_flag=CHANGE,
                change_message=f"Cleared the {name} cache: {dashboard.entries(count)}",
            )
            for name, count in cleared.items()
        )
        summary = ", ".join(f"{name} ({dashboard.entries(n)})" for name, n in cleared.items())
        messages.success(request, f"Cleared {summary}.")
        return redirect("admin:caching_cachedashboard_changelist")
