"""Who reads the analytics: logged-in users holding `view_analytics` (members of the group
"Analytics viewers", made by migration 0005, and superusers). The admin stays staff-only."""

from functools import wraps

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied

VIEW_ANALYTICS = "pganalytics.view_analytics"
WHY_NOT = 'an administrator can add your account to the group "Analytics viewers"'


def analytics_page(view):
    """Logged out: to the login page; logged in without the permission: the 403 page."""

    @login_required
    @wraps(view)
    def wrapper(request, *args, **kwargs):
        if not request.user.has_perm(VIEW_ANALYTICS):
            raise PermissionDenied(f"you may not read the analytics: {WHY_NOT}")
        return view(request, *args, **kwargs)

    return wrapper
