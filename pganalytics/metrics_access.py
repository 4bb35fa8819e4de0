"""Who may read /metrics: allowed addresses (METRICS_ALLOWED_ADDRESSES) or a bearer token
(METRICS_TOKEN). Everyone else gets 403: metrics name caches, queries' timings and hosts."""

import hmac
import ipaddress
from functools import wraps

from django.conf import settings
from django.http import HttpResponseForbidden


def allowed(request):
    token = settings.METRICS_TOKEN
    scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
    if token and scheme.lower() == "bearer" and hmac.compare_digest(
        credentials.strip().encode(), token.encode()
    ):
        return True
    try:
        address = ipaddress.ip_address(request.META.get("REMOTE_ADDR", ""))
    except ValueError:
        return False
    return any(address in network for network in settings.METRICS_ALLOWED_ADDRESSES)


def metrics_access(view):
    """Serve `view` only to allowed callers."""

    @wraps(view)
    def wrapper(request, *args, **kwargs):
        if not allowed(request):
            return HttpResponseForbidden(
                "metrics: address not allowed (METRICS_ALLOWED_ADDRESSES) and no valid bearer token",
                content_type="text/plain",
            )
        return view(request, *args, **kwargs)

    return wrapper
